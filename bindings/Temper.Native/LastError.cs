// temper_last_error(): the message of the failing call, per thread, as NUL-terminated UTF-8 in a
// pinned buffer. Every export but temper_last_error clears it on entry, so it always describes the
// most recent call on this thread; the pointer stays valid until the next call on this thread.
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Text;

namespace Temper.Native;

internal static unsafe class LastError
{
    private const int MaxChars = 4096;

    [ThreadStatic] private static byte[]? t_buffer;

    public static void Clear()
    {
        if (t_buffer != null) t_buffer[0] = 0;
    }

    public static void Set(string message)
    {
        if (message.Length > MaxChars) message = message[..MaxChars] + "...";
        int n = Encoding.UTF8.GetByteCount(message);
        if (t_buffer == null || t_buffer.Length < n + 1)
            t_buffer = GC.AllocateArray<byte>(Math.Max(256, n + 1), pinned: true);
        Encoding.UTF8.GetBytes(message, t_buffer);
        t_buffer[n] = 0;
    }

    public static byte* Pointer
    {
        get
        {
            t_buffer ??= GC.AllocateArray<byte>(256, pinned: true);
            return (byte*)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(t_buffer));
        }
    }

    /// <summary>The current message as a string (for tests).</summary>
    public static string Text => t_buffer == null ? "" : Encoding.UTF8.GetString(t_buffer, 0, Array.IndexOf(t_buffer, (byte)0));
}
