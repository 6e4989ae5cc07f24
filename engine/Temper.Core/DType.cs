// Element types a tensor can hold. NF4 is packed: two 4-bit codes per byte, with block scales kept
// beside the tensor (see the QLoRA issue); its element size is therefore given in bits.
namespace Temper.Core;

public enum DType
{
    F32,
    BF16,
    F16,
    F64,
    I32,
    I64,
    I16,
    I8,
    U8,
    Bool,
    NF4,
}

public static class DTypeInfo
{
    /// <summary>Bits per element (NF4: 4).</summary>
    public static int Bits(this DType t) => t switch
    {
        DType.F64 or DType.I64 => 64,
        DType.F32 or DType.I32 => 32,
        DType.BF16 or DType.F16 or DType.I16 => 16,
        DType.I8 or DType.U8 or DType.Bool => 8,
        DType.NF4 => 4,
        _ => throw new ArgumentOutOfRangeException(nameof(t)),
    };

    /// <summary>Bytes that <paramref name="elements"/> elements occupy (NF4 rounds up to whole bytes).</summary>
    public static long ByteCount(this DType t, long elements) => (elements * t.Bits() + 7) / 8;

    /// <summary>The safetensors spelling ("F32", "BF16", ...).</summary>
    public static string SafetensorsName(this DType t) => t switch
    {
        DType.F32 => "F32",
        DType.BF16 => "BF16",
        DType.F16 => "F16",
        DType.F64 => "F64",
        DType.I32 => "I32",
        DType.I64 => "I64",
        DType.I16 => "I16",
        DType.I8 => "I8",
        DType.U8 => "U8",
        DType.Bool => "BOOL",
        _ => throw new TemperException($"dtype {t} has no safetensors name"),
    };

    public static bool TryParseSafetensors(string name, out DType t)
    {
        switch (name)
        {
            case "F32": t = DType.F32; return true;
            case "BF16": t = DType.BF16; return true;
            case "F16": t = DType.F16; return true;
            case "F64": t = DType.F64; return true;
            case "I32": t = DType.I32; return true;
            case "I64": t = DType.I64; return true;
            case "I16": t = DType.I16; return true;
            case "I8": t = DType.I8; return true;
            case "U8": t = DType.U8; return true;
            case "BOOL": t = DType.Bool; return true;
            default: t = default; return false;
        }
    }
}
