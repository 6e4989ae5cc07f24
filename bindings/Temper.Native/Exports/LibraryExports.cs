// temper_version, temper_last_error, temper_status_name: the library-wide calls. None of them fails.
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Temper.Native.Exports;

public static unsafe class LibraryExports
{
    /// <summary>The version string; temper.h's TEMPER_VERSION must equal it (the header test checks).</summary>
    public const string Version = "0.5.0";

    [UnmanagedCallersOnly(EntryPoint = "temper_version")]
    public static byte* TemperVersion() => Literal("0.5.0\0"u8);

    [UnmanagedCallersOnly(EntryPoint = "temper_last_error")]
    public static byte* TemperLastError() => LastError.Pointer;

    [UnmanagedCallersOnly(EntryPoint = "temper_status_name")]
    public static byte* TemperStatusName(int status) => status switch
    {
        (int)TemperStatus.Ok => Literal("TEMPER_OK\0"u8),
        (int)TemperStatus.InvalidArgument => Literal("TEMPER_E_INVALID_ARGUMENT\0"u8),
        (int)TemperStatus.InvalidHandle => Literal("TEMPER_E_INVALID_HANDLE\0"u8),
        (int)TemperStatus.InvalidUtf8 => Literal("TEMPER_E_INVALID_UTF8\0"u8),
        (int)TemperStatus.NotFound => Literal("TEMPER_E_NOT_FOUND\0"u8),
        (int)TemperStatus.Io => Literal("TEMPER_E_IO\0"u8),
        (int)TemperStatus.InvalidData => Literal("TEMPER_E_INVALID_DATA\0"u8),
        (int)TemperStatus.Busy => Literal("TEMPER_E_BUSY\0"u8),
        (int)TemperStatus.Unsupported => Literal("TEMPER_E_UNSUPPORTED\0"u8),
        (int)TemperStatus.BufferTooSmall => Literal("TEMPER_E_BUFFER_TOO_SMALL\0"u8),
        (int)TemperStatus.OutOfMemory => Literal("TEMPER_E_OUT_OF_MEMORY\0"u8),
        (int)TemperStatus.Internal => Literal("TEMPER_E_INTERNAL\0"u8),
        _ => Literal("TEMPER_E_UNKNOWN\0"u8),
    };

    // u8 literals live in the image's read-only data: their address never moves.
    private static byte* Literal(ReadOnlySpan<byte> s) => (byte*)Unsafe.AsPointer(ref MemoryMarshal.GetReference(s));
}
