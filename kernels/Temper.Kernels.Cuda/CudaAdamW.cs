// AdamW on the GPU (cuda/adamw.cu, embedded as Ptx/adamw.ptx), torch.optim.AdamW's f32 update in place on
// param, m, v from grad (all f32, one length per tensor):
//   Step:      one tensor (no table; what IlgpuBackend.AdamWStep routes to, as IBackend's op is per tensor).
//   MultiStep: many tensors in one launch with one set of hyperparameters: the tensors are cut into chunks
//              of 4096 elements whose pointers and lengths go to a device table, one block per chunk. The
//              table is copied (on the stream; the copy waits for it) only when it differs from the last
//              one, so a training loop over the same tensors uploads it once.
// The scalars are Temper.Core's AdamWScalars (f64-derived, rounded to f32 once), as the ILGPU op's.
using Temper.Core;
using Temper.Cuda;
using Temper.Cuda.Driver;

namespace Temper.Kernels.Cuda;

/// <summary>One tensor of a multi-tensor AdamW step: four f32 buffers of Length elements.</summary>
public readonly record struct AdamWTensor(CudaDeviceMemory Param, CudaDeviceMemory Grad, CudaDeviceMemory M, CudaDeviceMemory V, long Length);

public sealed class CudaAdamW(CudaDevice device) : IDisposable
{
    private const int Threads = 256, Chunk = 4096, ChunkWords = 5; // a table entry: 4 pointers, the length
    private CudaModuleHandle? _module;
    private CudaFunction? _step, _multiStep;
    private CudaDeviceMemory? _table;
    private ulong[] _uploaded = [];

    public void Step(CudaDeviceMemory param, CudaDeviceMemory grad, CudaDeviceMemory m, CudaDeviceMemory v, long n, in AdamWParams p)
    {
        var s = ScalarsOf(p);
        Require(new AdamWTensor(param, grad, m, v, n), 0);
        if (n == 0) return;
        long blocks = (n + Chunk - 1) / Chunk;
        if (blocks > uint.MaxValue) throw new CudaException($"CudaAdamW.Step: {n} elements are more than one launch takes");
        _step ??= CudaDriver.GetFunction(Module(), "adamw_step");
        device.Launch(_step, ((uint)blocks, 1, 1), (Threads, 1, 1), new CudaKernelArguments().Add(param).Add(grad).Add(m).Add(v).Add(n).Add(s));
    }

    public void MultiStep(ReadOnlySpan<AdamWTensor> tensors, in AdamWParams p)
    {
        var s = ScalarsOf(p);
        long chunks = 0;
        for (int t = 0; t < tensors.Length; t++)
        {
            Require(tensors[t], t);
            chunks += (tensors[t].Length + Chunk - 1) / Chunk;
        }
        if (chunks == 0) return;
        if (chunks * ChunkWords > int.MaxValue) throw new CudaException($"CudaAdamW.MultiStep: {chunks} chunks are more than one launch takes");
        var table = new ulong[chunks * ChunkWords];
        int k = 0;
        foreach (var t in tensors)
            for (long start = 0; start < t.Length; start += Chunk)
            {
                ulong offset = 4UL * (ulong)start;
                table[k++] = t.Param.Pointer + offset;
                table[k++] = t.Grad.Pointer + offset;
                table[k++] = t.M.Pointer + offset;
                table[k++] = t.V.Pointer + offset;
                table[k++] = (ulong)Math.Min(Chunk, t.Length - start);
            }
        if (_table == null || _table.ByteLength < 8L * table.Length)
        {
            _table?.Dispose();
            _table = device.Allocate<ulong>(Math.Max(table.Length, 64 * ChunkWords));
            _uploaded = [];
        }
        if (!table.AsSpan().SequenceEqual(_uploaded))
        {
            device.CopyToDevice<ulong>(table, _table); // on the stream: after any launch still reading the last table
            _uploaded = table;
        }
        _multiStep ??= CudaDriver.GetFunction(Module(), "adamw_multi_step");
        device.Launch(_multiStep, ((uint)chunks, 1, 1), (Threads, 1, 1), new CudaKernelArguments().Add(_table).Add(s));
    }

    private static AdamWScalars ScalarsOf(in AdamWParams p) =>
        p.Step >= 1 ? AdamWScalars.Of(p) : throw new CudaException($"CudaAdamW: step {p.Step} must count from 1");

    private static void Require(AdamWTensor t, int index)
    {
        if (t.Length < 0) throw new CudaException($"CudaAdamW: tensor {index}'s length must be >= 0, not {t.Length}");
        long bytes = 4 * t.Length;
        CudaLinear.Require(t.Param, bytes, $"tensor {index}'s param");
        CudaLinear.Require(t.Grad, bytes, $"tensor {index}'s grad");
        CudaLinear.Require(t.M, bytes, $"tensor {index}'s m");
        CudaLinear.Require(t.V, bytes, $"tensor {index}'s v");
    }

    private CudaModuleHandle Module() => _module ??= device.LoadModule(KernelPtx.Read("adamw.ptx"), out _);

    public void Dispose()
    {
        _table?.Dispose();
        _module?.Dispose();
    }
}
