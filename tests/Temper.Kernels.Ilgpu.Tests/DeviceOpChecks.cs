// What every ILGPU op-check class shares: the device under test (skipped, visibly, where it is
// missing), a one-thread CPU backend to compare with, and tensors uploaded for a test and disposed
// after it. Down reads a result back and asserts it lives in this backend's device memory. Tensor
// cores are off here (exact kernels); TensorCoreChecks turns them on.
using Temper.Core;
using Temper.Kernels.Cpu;
using static Temper.Kernels.Ilgpu.Tests.Check;

namespace Temper.Kernels.Ilgpu.Tests;

public abstract class DeviceOpChecks(DeviceFixture device) : IDisposable
{
    private readonly List<IDisposable> _owned = [];

    protected DeviceFixture Device => device;
    /// <summary>The backend under test, with tensor cores off: op-checks hold the exact f32 kernels to f32
    /// bounds (TensorCoreChecks checks the tensor-core products to theirs).</summary>
    protected virtual IlgpuBackend B
    {
        get
        {
            var b = device.Backend;
            b.TensorCores = false;
            return b;
        }
    }
    protected CpuBackend Cpu { get; } = new(1);

    public void Dispose()
    {
        foreach (var t in _owned) t.Dispose();
        Cpu.Dispose();
        GC.SuppressFinalize(this);
    }

    protected T Own<T>(T t) where T : IDisposable
    {
        _owned.Add(t);
        return t;
    }

    protected Tensor Up(float[] values, params int[] shape) => Own(B.FromHost(Host(values, shape)));
    protected Tensor UpBf16(ushort[] values, params int[] shape) => Own(B.FromHost(HostBf16(values, shape)));
    protected Tensor Zeros(params int[] shape) => Own(B.Zeros(new Shape(shape)));

    /// <summary>Causal attention over q [B,Tq,H,D], k and v [B,S,Hkv,D] (scale 1/sqrt(D)), forward with lse then backward of dOut:
    /// out, lse, dq, dk, dv.</summary>
    protected float[][] AttentionPass(Tensor q, Tensor k, Tensor v, float[] dOut, int kvLength, int offset, int[] mask, int[] segments)
    {
        var (qs, ks) = (q.Shape, k.Shape);
        var args = new AttentionArgs(q, k, v, Zeros(qs[0], qs[1], qs[2], qs[3]), kvLength, offset, 1f / MathF.Sqrt(qs[3]), mask, Zeros(qs[0], qs[2], qs[1]), segments);
        B.Attention(args);
        var (dq, dk, dv) = (Zeros(qs[0], qs[1], qs[2], qs[3]), Zeros(ks[0], ks[1], ks[2], ks[3]), Zeros(ks[0], ks[1], ks[2], ks[3]));
        B.AttentionBackward(args, Up(dOut, qs[0], qs[1], qs[2], qs[3]), dq, dk, dv);
        return [Down(args.Output), Down(args.Lse!), Down(dq), Down(dk), Down(dv)];
    }

    /// <summary>The values of a device tensor, which must be this backend's.</summary>
    protected float[] Down(Tensor t)
    {
        Assert.Same(B, t.Storage.Device);
        Assert.IsType<DeviceStorage>(t.Storage);
        using var h = B.ToHost(t);
        return h.ToFloatArray();
    }
}
