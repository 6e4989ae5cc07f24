// The status codes every export returns (0 ok, negative errors) and the mapping from the engine's
// exceptions to them. NativeError is how the bindings themselves fail with a chosen code and message.
using System.Text;
using Temper.Core;

namespace Temper.Native;

/// <summary>temper_status in temper.h: the same names and values (the header test compares them).</summary>
public enum TemperStatus
{
    Ok = 0,
    InvalidArgument = -1,
    InvalidHandle = -2,
    InvalidUtf8 = -3,
    NotFound = -4,
    Io = -5,
    InvalidData = -6,
    Busy = -7,
    Unsupported = -8,
    BufferTooSmall = -9,
    OutOfMemory = -10,
    Internal = -100,
}

/// <summary>A failure the bindings report with a chosen status.</summary>
internal sealed class NativeError(TemperStatus status, string message) : Exception(message)
{
    public TemperStatus Status { get; } = status;
}

internal static class Status
{
    /// <summary>Records the exception's message as this thread's last error and returns its status (negative).</summary>
    public static int Report(Exception e)
    {
        var (status, message) = Classify(e);
        LastError.Set(message);
        return (int)status;
    }

    public static (TemperStatus, string) Classify(Exception e) => e switch
    {
        NativeError n => (n.Status, n.Message),
        DecoderFallbackException => (TemperStatus.InvalidUtf8, "invalid UTF-8: " + e.Message),
        FileNotFoundException or DirectoryNotFoundException => (TemperStatus.NotFound, e.Message),
        UnauthorizedAccessException or IOException => (TemperStatus.Io, e.Message),
        NotSupportedException or NotImplementedException => (TemperStatus.Unsupported, e.Message),
        TemperException => (TemperStatus.InvalidData, e.Message),
        ArgumentException => (TemperStatus.InvalidArgument, e.Message),
        OutOfMemoryException or InsufficientExecutionStackException => (TemperStatus.OutOfMemory, e.Message),
        _ => (TemperStatus.Internal, $"internal error ({e.GetType().Name}): {e.Message}"),
    };

    public static NativeError Arg(string message) => new(TemperStatus.InvalidArgument, message);
}
