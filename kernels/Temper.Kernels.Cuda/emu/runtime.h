// runtime.h: the CUDA emulator's host side between driver.cpp and the kernels: the kernel registry
// (build-emu.sh registers every extern "C" __global__ function of cuda/*.cu by name, with an invoker
// that unpacks cuLaunchKernel's void** parameters into the kernel's own argument types) and launch().
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

namespace emu {
struct Kernel
{
    std::function<void(void**)> invoke;
    int max_dynamic_shared = 48 * 1024;
    std::vector<size_t> parameter_bytes; // sizeof each parameter, so a captured launch can copy their values
};

std::map<std::string, Kernel>& registry();

// Runs every block of the grid, one after another; each block's threads as fibers. Returns an empty string
// or why the launch failed (a barrier deadlock, __trap, too many threads; with `programmatic`, the launch asked to
// overlap the kernel before it, a thread that returned without wait_prior_grids).
std::string launch(const Kernel& k, uint3 grid, uint3 block, size_t dynamic_shared, void** params, bool programmatic = false);

template <class... A, size_t... I>
void invoke_unpacked(void (*f)(A...), void** p, std::index_sequence<I...>)
{
    f(*static_cast<std::remove_cv_t<std::remove_reference_t<A>>*>(p[I])...);
}

template <class... A> struct Registration
{
    Registration(const char* name, void (*f)(A...))
    {
        registry()[name] = Kernel{[f](void** p) { invoke_unpacked(f, p, std::index_sequence_for<A...>{}); }, 48 * 1024,
            {sizeof(std::remove_cv_t<std::remove_reference_t<A>>)...}};
    }
};
} // namespace emu

#define TEMPER_EMU_REGISTER(name) static ::emu::Registration emu_registration_##name(#name, &name);
