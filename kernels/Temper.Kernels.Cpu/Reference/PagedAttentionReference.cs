// Paged attention, the oracle. q[N,H,D] token rows of several sequences; kCache/vCache
// [Blocks, BlockSize, Hkv, D]; output[N,H,D]. Row n belongs to sequence rowSequence[n] and sees keys at
// positions 0..rowKvLength[n]-1; position p of sequence s is slot p % blockSize of block
// blockTables[s * maxBlocks + p / blockSize]. Head h reads kv head h / (H / Hkv). Scores scale * q.k,
// softmax with max subtraction, out = sum p_j v_j; a row that sees no key gets zeros. Sums in f64.
namespace Temper.Kernels.Cpu.Reference;

public static class PagedAttentionReference
{
    public static void Forward(ReadOnlySpan<float> q, ReadOnlySpan<float> kCache, ReadOnlySpan<float> vCache, Span<float> output,
        ReadOnlySpan<int> blockTables, int maxBlocks, ReadOnlySpan<int> rowSequence, ReadOnlySpan<int> rowKvLength,
        int heads, int kvHeads, int d, int blockSize, float scale)
    {
        int n = rowSequence.Length, group = heads / kvHeads;
        for (int row = 0; row < n; row++)
        for (int h = 0; h < heads; h++)
        {
            int len = rowKvLength[row], kh = h / group, qo = (row * heads + h) * d;
            var scores = new double[len];
            double max = double.NegativeInfinity;
            for (int j = 0; j < len; j++)
            {
                int ko = KeyOffset(blockTables, maxBlocks, rowSequence[row], j, blockSize, kvHeads, kh, d);
                double dot = 0;
                for (int t = 0; t < d; t++) dot += (double)q[qo + t] * kCache[ko + t];
                scores[j] = scale * dot;
                max = Math.Max(max, scores[j]);
            }
            double sum = 0;
            for (int j = 0; j < len; j++) sum += Math.Exp(scores[j] - max);
            for (int t = 0; t < d; t++)
            {
                double acc = 0;
                for (int j = 0; j < len; j++)
                    acc += Math.Exp(scores[j] - max) / sum * vCache[KeyOffset(blockTables, maxBlocks, rowSequence[row], j, blockSize, kvHeads, kh, d) + t];
                output[qo + t] = (float)acc;
            }
        }
    }

    /// <summary>Offset of key position p (kv head kh) of sequence s in the [Blocks, BlockSize, Hkv, D] cache.</summary>
    public static int KeyOffset(ReadOnlySpan<int> blockTables, int maxBlocks, int s, int p, int blockSize, int kvHeads, int kh, int d) =>
        ((blockTables[s * maxBlocks + p / blockSize] * blockSize + p % blockSize) * kvHeads + kh) * d;
}
