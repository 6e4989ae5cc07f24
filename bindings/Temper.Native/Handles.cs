// Opaque handles: the pointer a C caller holds is a GCHandle (which keeps the object alive); the table
// of live handles is what every call checks first, so NULL, freed and never-issued pointers, and a
// handle of the wrong kind, are TEMPER_E_INVALID_HANDLE instead of a crash. (A freed handle's value can
// be issued again to a later object; the table cannot tell those apart.)
using System.Collections.Concurrent;
using System.Runtime.InteropServices;

namespace Temper.Native;

internal static class Handles
{
    private static readonly ConcurrentDictionary<nint, object> s_live = new();

    public static nint Create(object target)
    {
        var h = GCHandle.Alloc(target);
        nint p = GCHandle.ToIntPtr(h);
        s_live[p] = target;
        return p;
    }

    /// <summary>The object behind a handle the caller passed as <paramref name="what"/> (e.g. "model").</summary>
    public static T Get<T>(nint handle, string what) where T : class
    {
        if (handle == 0) throw new NativeError(TemperStatus.InvalidHandle, $"{what} is NULL");
        if (!s_live.TryGetValue(handle, out var target))
            throw new NativeError(TemperStatus.InvalidHandle, $"{what} (0x{handle:x}) is not a live handle: it was freed, or never returned by libtemper");
        return target as T ?? throw new NativeError(TemperStatus.InvalidHandle,
            $"{what} (0x{handle:x}) is a handle of another kind ({Kind(target)}), not {Kind(typeof(T))}");
    }

    /// <summary>Forgets and frees a handle; false when it was not live (freed twice, or by two threads at once).</summary>
    public static bool Free(nint handle)
    {
        if (!s_live.TryRemove(handle, out _)) return false;
        GCHandle.FromIntPtr(handle).Free();
        return true;
    }

    public static int LiveCount => s_live.Count;

    private static string Kind(object o) => Kind(o.GetType());
    private static string Kind(Type t) => t.Name switch
    {
        nameof(NativeModel) => "temper_model",
        nameof(NativeAdapter) => "temper_adapter",
        nameof(NativeTrainer) => "temper_trainer",
        _ => t.Name,
    };
}
