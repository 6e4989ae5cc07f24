// A backend that counts the bytes of the tensors it allocates (Zeros) while they are alive, and the
// peak of that count: what a training run reports as its measured peak beside the plan's prediction;
// and what it holds beyond them (a caching allocator's free buffers).
namespace Temper.Core;

public interface IMemoryMeter
{
    /// <summary>Bytes of this backend's allocated tensors not yet disposed.</summary>
    long LiveBytes { get; }
    /// <summary>Bytes this backend holds for tensors: the live ones' buffers (with their allocation rounding) and the freed buffers its pool keeps for reuse.</summary>
    long ReservedBytes { get; }
    /// <summary>The most LiveBytes has been since the last ResetPeak.</summary>
    long PeakBytes { get; }
    /// <summary>Starts a new peak from the current LiveBytes.</summary>
    void ResetPeak();
    /// <summary>Whether the products keep a bf16 copy of their largest input among the live bytes (the CUDA C++ kernels do).</summary>
    bool HoldsBf16ProductCopies => false;
    /// <summary>Bytes of the fused LM head + cross-entropy's scratch for <paramref name="rows"/> tokens (its vocabulary chunk's logits and,
    /// onePass: only dHidden asked for, its [rows, hidden] accumulator) that the backend keeps for the rest of the run, so that they
    /// are among the live bytes at the peak (a device arena's; 0 where the scratch is freed after the op, as the CPU backend's is).</summary>
    long LmHeadScratchBytes(int rows, int hidden, int vocab, bool onePass) => 0;
}
