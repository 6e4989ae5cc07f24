// NF4 decoding on the GPU (cuda/nf4.cu, embedded as Ptx/nf4.ptx), for QLoRA's frozen base weights:
//   Absmax:     absmax[blocks] f32 from the double-quantised codes q[blocks] and scales[ceil(blocks/256)]
//   Dequantize: out[n] f32 = code book[code(i)] * absmax(i / 64), the absmax decoded in the kernel
//   ToBf16:     out[n] bf16 = bf16(code book[code(i)] * absmax[i / 64]) from an NF4 Linear weight's decoded absmax
//               (what its fused kernels stage; CudaLinear's dequantise-then-GEMM route)
// The code book (16 f32) and bitsandbytes' dynamic map (256 f32) are uploaded once per instance;
// CodeBook is the device copy CudaLinear's NF4 weight takes (LinearWeight.Nf4).
using Temper.Core.Quantization;
using Temper.Cuda;
using Temper.Cuda.Driver;

namespace Temper.Kernels.Cuda;

public sealed class CudaNf4 : IDisposable
{
    private const int Threads = 256;
    private readonly CudaDevice _device;
    private readonly CudaDeviceMemory _dynamicMap;
    private CudaModuleHandle? _module;
    private CudaFunction? _absmax, _dequantize, _toBf16;

    public CudaNf4(CudaDevice device)
    {
        _device = device;
        CodeBook = device.Upload<float>(Nf4CodeBook.Values);
        _dynamicMap = device.Upload<float>(DynamicMap.Values);
    }

    /// <summary>The 16 NF4 code values on the device.</summary>
    public CudaDeviceMemory CodeBook { get; }

    /// <summary>absmax[b] = dyn[q[b]] * scales[b / 256] + offset for b &lt; blocks (two f32 roundings).</summary>
    public void Absmax(CudaDeviceMemory q, CudaDeviceMemory scales, float offset, CudaDeviceMemory absmax, int blocks)
    {
        RequireBlocks(q, scales, blocks, "Absmax");
        CudaLinear.Require(absmax, 4L * blocks, "absmax");
        if (blocks == 0) return;
        _absmax ??= CudaDriver.GetFunction(Module(), "nf4_absmax");
        _device.Launch(_absmax, blocks, Threads, new CudaKernelArguments().Add(q).Add(scales).Add(_dynamicMap).Add(offset).Add(absmax).Add(blocks));
    }

    /// <summary>output[i] f32 = code book[code(i)] * absmax(i / 64) for the n weights of the packed codes.</summary>
    public void Dequantize(CudaDeviceMemory codes, CudaDeviceMemory q, CudaDeviceMemory scales, float offset, CudaDeviceMemory output, long n)
    {
        if (n < 0) throw new CudaException($"CudaNf4.Dequantize: n must be >= 0, not {n}");
        long blocks = (n + Nf4Weight.BlockSize - 1) / Nf4Weight.BlockSize;
        RequireBlocks(q, scales, blocks, "Dequantize");
        CudaLinear.Require(codes, (n + 1) / 2, "the NF4 codes");
        CudaLinear.Require(output, 4 * n, "output");
        if (n == 0) return;
        long threads = (n + 7) / 8;
        if (threads > (long)int.MaxValue * Threads) throw new CudaException($"CudaNf4.Dequantize: {n} weights are more than one launch takes");
        _dequantize ??= CudaDriver.GetFunction(Module(), "nf4_dequantize");
        var args = new CudaKernelArguments().Add(codes).Add(q).Add(scales).Add(_dynamicMap).Add(offset).Add(CodeBook).Add(output).Add(n);
        _device.Launch(_dequantize, ((uint)((threads + Threads - 1) / Threads), 1, 1), (Threads, 1, 1), args);
    }

    /// <summary>output[i] bf16 = bf16(code book[code(i)] * absmax[i / 64]) for the n weights of an NF4 Linear weight, rounded to
    /// nearest even: the values linear_bf16.cu's NF4 kernels stage.</summary>
    public void ToBf16(LinearWeight.Nf4 w, CudaDeviceMemory output, long n)
    {
        if (n < 0) throw new CudaException($"CudaNf4.ToBf16: n must be >= 0, not {n}");
        CudaLinear.Require(w.Codes, (n + 1) / 2, "the NF4 codes");
        CudaLinear.Require(w.Absmax, 4 * ((n + Nf4Weight.BlockSize - 1) / Nf4Weight.BlockSize), "the NF4 absmax");
        CudaLinear.Require(w.CodeBook, 4 * 16, "the NF4 code book");
        CudaLinear.Require(output, 2 * n, "output");
        if (n == 0) return;
        long threads = (n + 7) / 8;
        if (threads > (long)int.MaxValue * Threads) throw new CudaException($"CudaNf4.ToBf16: {n} weights are more than one launch takes");
        _toBf16 ??= CudaDriver.GetFunction(Module(), "nf4_to_bf16");
        _device.Launch(_toBf16, ((uint)((threads + Threads - 1) / Threads), 1, 1), (Threads, 1, 1),
            new CudaKernelArguments().Add(w.Codes).Add(w.Absmax).Add(w.CodeBook).Add(output).Add(n));
    }

    private static void RequireBlocks(CudaDeviceMemory q, CudaDeviceMemory scales, long blocks, string op)
    {
        if (blocks < 0) throw new CudaException($"CudaNf4.{op}: blocks must be >= 0, not {blocks}");
        CudaLinear.Require(q, blocks, "the absmax codes");
        CudaLinear.Require(scales, 4 * Nf4Weight.ScaleBlocks(blocks), "the absmax scales");
    }

    private CudaModuleHandle Module() => _module ??= _device.LoadModule(KernelPtx.Read("nf4.ptx"), out _);

    public void Dispose()
    {
        _module?.Dispose();
        CodeBook.Dispose();
        _dynamicMap.Dispose();
    }
}
