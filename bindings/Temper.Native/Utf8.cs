// UTF-8 in and out of the boundary. Strings from C are NUL-terminated and must be valid UTF-8 (else
// TEMPER_E_INVALID_UTF8 naming the argument and the byte offset). Strings to C go into caller buffers:
// the return value is the size needed (bytes including the NUL); the buffer is written only when it
// is at least that big, so a caller can ask with (NULL, 0) first.
using System.Runtime.InteropServices;
using System.Text;

namespace Temper.Native;

internal static unsafe class Utf8
{
    private static readonly UTF8Encoding Strict = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    public static string Read(byte* p, string what)
    {
        if (p == null) throw Status.Arg($"{what} is NULL");
        var bytes = MemoryMarshal.CreateReadOnlySpanFromNullTerminated(p);
        try
        {
            return Strict.GetString(bytes);
        }
        catch (DecoderFallbackException e)
        {
            throw new NativeError(TemperStatus.InvalidUtf8, $"{what} is not valid UTF-8 (at byte {e.Index})");
        }
    }

    public static string? ReadOptional(byte* p, string what) => p == null ? null : Read(p, what);

    /// <summary>Writes s + NUL into buf when it fits; returns the bytes needed including the NUL.</summary>
    public static int Write(string s, byte* buf, int capacity, string what)
    {
        if (capacity < 0) throw Status.Arg($"{what} capacity is negative ({capacity})");
        if (buf == null && capacity > 0) throw Status.Arg($"{what} is NULL but its capacity is {capacity}");
        int n = Encoding.UTF8.GetByteCount(s);
        if (n + 1 > capacity) return n + 1;
        var dst = new Span<byte>(buf, capacity);
        Encoding.UTF8.GetBytes(s, dst);
        dst[n] = 0;
        return n + 1;
    }

    /// <summary>NUL-terminated UTF-8 bytes of s in a pinned array (for callbacks).</summary>
    public static byte[] Pinned(string s)
    {
        int n = Encoding.UTF8.GetByteCount(s);
        var a = GC.AllocateArray<byte>(n + 1, pinned: true);
        Encoding.UTF8.GetBytes(s, a);
        return a;
    }
}
