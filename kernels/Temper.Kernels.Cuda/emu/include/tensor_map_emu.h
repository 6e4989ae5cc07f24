// tensor_map_emu.h: what the CUDA emulator keeps in a CUtensorMap's 128 opaque bytes (the driver's encoding
// is undocumented): driver.cpp's cuTensorMapEncodeTiled writes it, tma_ops.cuh's emulated
// cp.async.bulk.tensor reads it. Tiled maps of rank 1 or 2 only (the emulator refuses higher ranks).
#pragma once
#include <cstdint>

namespace emu {
struct TensorMapDescription
{
    static constexpr uint32_t Magic = 0x544D4150; // "TMAP": a map cuTensorMapEncodeTiled wrote
    uint32_t magic;
    uint32_t rank;          // 1 or 2
    uint32_t element_bytes; // of the CUtensorMapDataType
    uint32_t swizzle;       // CUtensorMapSwizzle: 0 none, 1 32B, 2 64B, 3 128B
    uint32_t nan_fill;      // CUtensorMapFloatOOBfill: 0 zeros, 1 NaN, for elements outside the tensor
    uint32_t box[2];        // elements per box dimension (box[1] = 1 for rank 1)
    uint32_t element_strides[2];
    uint32_t pad;
    uint64_t address;       // the tensor's global address
    uint64_t dims[2];       // elements per dimension, innermost first (dims[1] = 1 for rank 1)
    uint64_t row_stride;    // bytes between dimension-1 indices
};
static_assert(sizeof(TensorMapDescription) <= 128, "a CUtensorMap holds 128 bytes");
} // namespace emu
