// A tensor: a shape, a dtype and a buffer. Host tensors expose their bytes as a span (memory-mapped
// safetensors data is used in place, never copied); device tensors belong to one backend and are
// disposed explicitly. Data is row-major and contiguous.
using System.Runtime.InteropServices;

namespace Temper.Core;

/// <summary>Where a tensor's bytes live. Disposing releases device memory or a mapping's reference.</summary>
public interface ITensorStorage : IDisposable
{
    long ByteLength { get; }
    /// <summary>The backend that owns the memory, or null for host memory.</summary>
    IBackend? Device { get; }
}

/// <summary>Host memory: a pinned array, or a window of a memory-mapped file.</summary>
public sealed class HostStorage : ITensorStorage
{
    private readonly IDisposable? _owner;
    public HostStorage(Memory<byte> memory, IDisposable? owner = null)
    {
        Memory = memory;
        _owner = owner;
    }

    public Memory<byte> Memory { get; }
    public long ByteLength => Memory.Length;
    public IBackend? Device => null;
    public void Dispose() => _owner?.Dispose();

    public static HostStorage Allocate(long bytes)
    {
        if (bytes > Array.MaxLength) throw new TemperException($"a host tensor of {bytes} bytes exceeds the 2 GiB single-buffer limit");
        return new HostStorage(GC.AllocateUninitializedArray<byte>((int)bytes, pinned: true));
    }
}

public sealed class Tensor : IDisposable
{
    public Tensor(Shape shape, DType dtype, ITensorStorage storage, string? name = null)
    {
        long need = dtype.ByteCount(shape.Elements);
        if (storage.ByteLength < need)
            throw new TemperException($"tensor {name ?? "?"}: {shape} {dtype} needs {need} bytes, its buffer has {storage.ByteLength}");
        Shape = shape;
        DType = dtype;
        Storage = storage;
        Name = name;
    }

    public Shape Shape { get; }
    public DType DType { get; }
    public ITensorStorage Storage { get; }
    public string? Name { get; }
    public long Elements => Shape.Elements;
    public long ByteCount => DType.ByteCount(Elements);
    public bool IsHost => Storage is HostStorage;

    /// <summary>A zero-filled host tensor.</summary>
    public static Tensor Zeros(Shape shape, DType dtype = DType.F32, string? name = null)
    {
        var s = HostStorage.Allocate(dtype.ByteCount(shape.Elements));
        s.Memory.Span.Clear();
        return new Tensor(shape, dtype, s, name);
    }

    /// <summary>A host tensor holding a copy of <paramref name="values"/>.</summary>
    public static Tensor FromArray<T>(Shape shape, ReadOnlySpan<T> values, DType dtype, string? name = null) where T : unmanaged
    {
        var t = Zeros(shape, dtype, name);
        var dst = t.Bytes;
        var src = MemoryMarshal.AsBytes(values);
        if (src.Length != dst.Length) throw new ArgumentException($"{values.Length} values do not fill {shape} {dtype}");
        src.CopyTo(dst);
        return t;
    }

    public static Tensor FromFloats(Shape shape, ReadOnlySpan<float> values, string? name = null) => FromArray(shape, values, DType.F32, name);

    /// <summary>A new host tensor of f32 values held as <paramref name="dtype"/>: F32 as they are, BF16 rounded to nearest even.</summary>
    public static Tensor FromFloatsAs(Shape shape, ReadOnlySpan<float> values, DType dtype, string? name = null)
    {
        if (dtype == DType.F32) return FromFloats(shape, values, name);
        if (dtype != DType.BF16) throw new ArgumentException($"f32 values are held as f32 or bf16, not {dtype}");
        var t = Zeros(shape, DType.BF16, name);
        BFloat16.FromSingle(values, t.Span<ushort>());
        return t;
    }

    /// <summary>The bytes of a host tensor.</summary>
    public Span<byte> Bytes
    {
        get
        {
            if (Storage is not HostStorage h) throw new InvalidOperationException($"tensor {Name} lives on {Storage.Device?.Name}, not the host");
            return h.Memory.Span[..checked((int)ByteCount)];
        }
    }

    /// <summary>The elements of a host tensor as <typeparamref name="T"/> (which must match the dtype's width).</summary>
    public Span<T> Span<T>() where T : unmanaged
    {
        if (DType.Bits() != 8 * System.Runtime.CompilerServices.Unsafe.SizeOf<T>())
            throw new InvalidOperationException($"tensor {Name} is {DType}, not viewable as {typeof(T).Name}");
        return MemoryMarshal.Cast<byte, T>(Bytes);
    }

    public Span<float> Floats => Span<float>();

    /// <summary>A host f32 copy of this tensor's values (widening bf16/f16, converting ints).</summary>
    public float[] ToFloatArray()
    {
        var r = new float[Elements];
        switch (DType)
        {
            case DType.F32: Span<float>().CopyTo(r); break;
            case DType.BF16: BFloat16.ToSingle(Span<ushort>(), r); break;
            case DType.F16: { var s = Span<Half>(); for (int i = 0; i < r.Length; i++) r[i] = (float)s[i]; break; }
            case DType.F64: { var s = Span<double>(); for (int i = 0; i < r.Length; i++) r[i] = (float)s[i]; break; }
            case DType.I32: { var s = Span<int>(); for (int i = 0; i < r.Length; i++) r[i] = s[i]; break; }
            case DType.I64: { var s = Span<long>(); for (int i = 0; i < r.Length; i++) r[i] = s[i]; break; }
            default: throw new TemperException($"tensor {Name}: cannot convert {DType} to f32");
        }
        return r;
    }

    /// <summary>A host f32 tensor with the same shape and values.</summary>
    public Tensor ToF32()
    {
        if (DType == DType.F32 && IsHost) return this;
        return FromFloats(Shape, ToFloatArray(), Name);
    }

    public void Dispose() => Storage.Dispose();
    public override string ToString() => $"{Name ?? "tensor"} {DType}{Shape}";
}
