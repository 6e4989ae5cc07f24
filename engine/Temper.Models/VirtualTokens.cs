// How the decoder's passes place a prompt-tuning adapter's P virtual tokens (ModelWeights.PromptEmbeddings
// [P,C]) before every sequence, as PEFT's prompt tuning feeds inputs_embeds = [prompt; embed(ids)] with the
// attention mask extended by P ones; and a prefix-tuning adapter's (ModelWeights.Prefix), whose P virtual rows
// have each layer's keys and values replaced by the prefix's after RoPE (OverwriteKv), so the real tokens attend
// to them as to PEFT's past_key_values; what the virtual rows compute beyond that is never read. Inside a pass an id at or above the vocabulary size V names a virtual
// token (V + j is row j of the prompt), so a row of [B, P+T] reads V..V+P-1, then the real ids:
//   Prepend      ids, mask, positions [B,T] -> [B,P+T]: the virtual tokens at positions 0..P-1 (mask 1), the real
//                positions moved up by P (what transformers computes for inputs_embeds of length P+T)
//   Embed        x [N,C] = embed[id] for real ids, prompt[id - V] for virtual ones (runs of them copied whole)
//   EmbedBackward dPrompt [P,C] += the virtual rows of dx [N,C]
//   RealRows     out [B*T,X] = rows P..P+T-1 of each sequence of full [B*(P+T),X] (the real tokens' rows), and back
//   OverwriteKv  prefix tuning: rows 0..P-1 of each sequence of layer l's k, v [B*(P+T), Hkv*D] = the prefix's
//   KvBackward   prefix tuning: dKey, dValue [P, Hkv*D] += those rows of dk, dv (then cleared)
using Temper.Core;

namespace Temper.Models;

public static class VirtualTokens
{
    /// <summary>Rows [B, P+T] from [B, T]: virtual ids V..V+P-1 first. An empty mask stays empty (all real); empty positions mean 0..T-1.</summary>
    public static (int[] Ids, int[] Mask, int[] Positions) Prepend(ReadOnlySpan<int> ids, ReadOnlySpan<int> mask, ReadOnlySpan<int> positions, int batch, int p, int vocab)
    {
        int t = ids.Length / batch, full = p + t;
        var outIds = new int[batch * full];
        var outMask = mask.IsEmpty ? [] : new int[batch * full];
        var outPos = new int[batch * full];
        for (int b = 0; b < batch; b++)
        {
            for (int j = 0; j < p; j++)
            {
                outIds[b * full + j] = vocab + j;
                outPos[b * full + j] = j;
                if (!mask.IsEmpty) outMask[b * full + j] = 1;
            }
            for (int i = 0; i < t; i++)
            {
                outIds[b * full + p + i] = ids[b * t + i];
                outPos[b * full + p + i] = p + (positions.IsEmpty ? i : positions[b * t + i]);
                if (!mask.IsEmpty) outMask[b * full + p + i] = mask[b * t + i];
            }
        }
        return (outIds, outMask, outPos);
    }

    /// <summary>positions + shift (the real tokens' positions after a cache that starts with virtual tokens).</summary>
    public static int[] Shift(ReadOnlySpan<int> positions, int shift)
    {
        var s = new int[positions.Length];
        for (int i = 0; i < s.Length; i++) s[i] = positions[i] + shift;
        return s;
    }

    /// <summary>x [N,C]: the embedding row of each real id, the prompt row of each virtual one.</summary>
    public static void Embed(IBackend be, ModelWeights w, int vocab, ReadOnlySpan<int> ids, Tensor x)
    {
        if (w.VirtualTokenCount == 0)
        {
            be.Embedding(w.Embed, ids, x);
            return;
        }
        var real = new int[ids.Length];
        for (int i = 0; i < ids.Length; i++) real[i] = ids[i] < vocab ? ids[i] : 0;
        be.Embedding(w.Embed, real, x);
        if (w.PromptEmbeddings is not { } prompt) return; // prefix tuning: the virtual rows' inputs are never read (their K/V are the prefix's)
        foreach (var (row, first, length) in Runs(ids, vocab, prompt.Shape[0]))
            be.CopyRows(prompt, first, x, row, length);
    }

    /// <summary>Prefix tuning: the virtual rows (the first P of each sequence) of layer l's k and v [B*(P+T), Hkv*D], after RoPE, become the prefix's.</summary>
    public static void OverwriteKv(IBackend be, PrefixKv prefix, int layer, Tensor k, Tensor v, int batch)
    {
        int p = prefix.Tokens, full = k.Shape.Rows / batch;
        for (int b = 0; b < batch; b++)
        {
            be.CopyRows(prefix.Keys[layer], 0, k, b * full, p);
            be.CopyRows(prefix.Values[layer], 0, v, b * full, p);
        }
    }

    /// <summary>
    /// Prefix tuning's backward at layer l: dKey, dValue [P, Hkv*D] += the virtual rows of dk, dv (summed over the
    /// batch), and those rows of dk, dv are cleared, since nothing before them reaches the prefix's rows.
    /// </summary>
    public static void KvBackward(IBackend be, int p, int batch, Tensor dk, Tensor dv, Tensor? dKey, Tensor? dValue)
    {
        int full = dk.Shape.Rows / batch, width = dk.Shape[1];
        var which = new int[batch * p];
        for (int i = 0; i < which.Length; i++) which[i] = i % p;
        using var gathered = be.Uninitialized(new Shape(batch * p, width));
        using var zeros = be.Zeros(new Shape(p, width));
        foreach (var (d, grad) in new[] { (dk, dKey), (dv, dValue) })
        {
            for (int b = 0; b < batch; b++) be.CopyRows(d, b * full, gathered, b * p, p);
            if (grad != null) be.EmbeddingBackward(gathered, which, grad);
            for (int b = 0; b < batch; b++) be.CopyRows(zeros, 0, d, b * full, p);
        }
    }

    /// <summary>dPrompt [P,C] += dx's rows at the virtual ids (gathered, then added through EmbeddingBackward).</summary>
    public static void EmbedBackward(IBackend be, Tensor dx, ReadOnlySpan<int> ids, int vocab, Tensor dPrompt)
    {
        var runs = Runs(ids, vocab, dPrompt.Shape[0]);
        int rows = runs.Sum(r => r.Length);
        if (rows == 0) return;
        using var gathered = be.Uninitialized(new Shape(rows, dx.Shape[1]));
        var which = new int[rows];
        int at = 0;
        foreach (var (row, first, length) in runs)
        {
            be.CopyRows(dx, row, gathered, at, length);
            for (int j = 0; j < length; j++) which[at + j] = first + j;
            at += length;
        }
        be.EmbeddingBackward(gathered, which, dPrompt);
    }

    /// <summary>real [B*T,X] = rows P..P+T-1 of each sequence of full [B*(P+T),X].</summary>
    public static void CopyRealRows(IBackend be, Tensor full, int batch, int p, Tensor real)
    {
        int t = real.Shape.Rows / batch;
        for (int b = 0; b < batch; b++) be.CopyRows(full, b * (p + t) + p, real, b * t, t);
    }

    /// <summary>full's real rows (P..P+T-1 of each sequence) = real [B*T,X]; the virtual rows are left as they are.</summary>
    public static void CopyToRealRows(IBackend be, Tensor real, int batch, int p, Tensor full)
    {
        int t = real.Shape.Rows / batch;
        for (int b = 0; b < batch; b++) be.CopyRows(real, b * t, full, b * (p + t) + p, t);
    }

    // Maximal runs of consecutive virtual ids (V+j, V+j+1, ...) as (first row, first prompt row, length).
    private static List<(int Row, int First, int Length)> Runs(ReadOnlySpan<int> ids, int vocab, int p)
    {
        var runs = new List<(int, int, int)>();
        for (int i = 0; i < ids.Length;)
        {
            int j = ids[i] - vocab;
            if (j < 0) { i++; continue; }
            if (j >= p) throw new TemperException($"virtual token id {ids[i]} is past the prompt's {p} virtual tokens (vocabulary size {vocab})");
            int len = 1;
            while (i + len < ids.Length && ids[i + len] == ids[i] + len && j + len < p) len++;
            runs.Add((i, j, len));
            i += len;
        }
        return runs;
    }
}
