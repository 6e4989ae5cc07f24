// Greedy decoding of a Llama-family model (Llama, Qwen2, Qwen3, Mistral) on CUDA through Temper's own kernels
// only (no ILGPU), one step captured once as a CUDA graph and replayed per token, so batch-1 decoding is
// bound by reading the weights rather than by launches and host round trips. Rows R <= CudaGemv.MaxRows
// sequences decode in lockstep; every per-token value (positions, tokens, key counts) lives on the device
// (cuda/decode_step.cu) and the prompt is fed through the same graph one token a step.
// A step, for x[R,C] f32 and bf16 weights (q, k and v packed into one [(H + 2 Hkv) D, C] matrix):
//   x = embed[token]; per layer:
//     qkv = RMSNorm(x) Wqkv^T + b              (GEMV, the norm folded in)
//     q, cache[position] = RoPE(q), RoPE(k), v (decode_rope_append; Qwen3 norms each q and k head first; for one row
//                                              without head norms the GEMV's epilogue does it: CudaGemv.QkvRope)
//     a = attention(q, cache[0..position])    (paged attention, one block of T slots per row)
//     x += a Wo^T + b                         (GEMV, residual in place)
//     h = silu(RMSNorm(x) Wg^T) * (RMSNorm(x) Wu^T)  (GEMV pair)
//     x += h Wd^T + b
//   logits[R,V] = RMSNorm(x) Wlm^T, argmax folded in; next token = the prompt's or the argmax.
// With DependentLaunch (TEMPER_DECODE_PDL=1 on compute capability 9.0) each kernel after the embedding may start while the
// one before drains (programmatic dependent launch; it waits for that one before reading its output).
// Caches are f32 [R, T, Hkv, D] per layer. Sampling other than greedy is the host's: read Logits().
// Prefill (CudaDecodeGraph.Prefill.cs) runs long prompts through the layers in chunks instead; Profile
// (CudaDecodeGraph.Profile.cs) times each part of a step.
using Temper.Cuda;
using Temper.Cuda.Driver;

namespace Temper.Kernels.Cuda;

/// <summary>The sizes of a decoder and its RoPE: inverse frequencies [D/2] and the attention scaling its tables carry.</summary>
public sealed record DecodeModelShape(int Layers, int Hidden, int Heads, int KvHeads, int HeadDim, int Intermediate, int Vocab, float RmsNormEps, float[] RopeInvFreq, float RopeScaling)
{
    public int QkvRows => (Heads + 2 * KvHeads) * HeadDim;
}

/// <summary>One layer's weights as host spans: matrices as bf16 bits [Out, In]; norms [C] (Qwen3's head norms [D]) and biases [Out] f32, empty when absent.</summary>
public readonly ref struct DecodeLayerWeights
{
    public ReadOnlySpan<float> InputNorm { get; init; }
    public ReadOnlySpan<ushort> Q { get; init; }
    public ReadOnlySpan<ushort> K { get; init; }
    public ReadOnlySpan<ushort> V { get; init; }
    public ReadOnlySpan<float> QBias { get; init; }
    public ReadOnlySpan<float> KBias { get; init; }
    public ReadOnlySpan<float> VBias { get; init; }
    public ReadOnlySpan<float> QNorm { get; init; }
    public ReadOnlySpan<float> KNorm { get; init; }
    public ReadOnlySpan<ushort> O { get; init; }
    public ReadOnlySpan<float> OBias { get; init; }
    public ReadOnlySpan<float> PostAttentionNorm { get; init; }
    public ReadOnlySpan<ushort> Gate { get; init; }
    public ReadOnlySpan<ushort> Up { get; init; }
    public ReadOnlySpan<ushort> Down { get; init; }
    public ReadOnlySpan<float> GateBias { get; init; }
    public ReadOnlySpan<float> UpBias { get; init; }
    public ReadOnlySpan<float> DownBias { get; init; }
}

public sealed partial class CudaDecodeGraph : IDisposable
{
    private const int Threads = 256;
    private readonly CudaDevice _device;
    private readonly CudaGemv _gemv;
    private readonly CudaPagedAttention _attention;
    private readonly List<CudaDeviceMemory> _owned = [];
    private readonly Layer[] _layers;
    private readonly CudaDeviceMemory _x, _qkv, _q, _attn, _h, _logits, _argmax, _kvLen, _rowIndex, _position, _token, _promptLen, _prompt, _tokens, _cos, _sin;
    private readonly CudaDeviceMemory? _workspace;
    private readonly CudaPagedAttention.Shape _attentionShape;
    private readonly int _splits;
    private CudaDeviceMemory? _embed, _finalNorm, _lmHead;
    private CudaModuleHandle? _module;
    private CudaFunction? _embedFn, _ropeFn, _nextFn;
    private Prefiller? _prefill;
    private CudaGraph? _graph;
    private (CudaGraph Graph, List<CudaEventHandle> Events, List<string> Labels)? _profile;
    private int[] _promptLengths = [], _hostPrompts = []; // as Start uploaded them: lengths [R], prompts [R, T]

    private sealed class Layer
    {
        public CudaDeviceMemory? InputNorm, Qkv, QkvBias, QNorm, KNorm, O, OBias, PostNorm, Gate, Up, Down, GateBias, UpBias, DownBias, KCache, VCache;

        /// <summary>The head norms as decode_rope_append takes them: device pointers, 0 for none.</summary>
        public ulong QNormPointer => QNorm?.Pointer ?? 0UL;
        public ulong KNormPointer => KNorm?.Pointer ?? 0UL;
    }

    /// <summary>Device buffers for <paramref name="rows"/> sequences of up to <paramref name="capacity"/> positions; the weights come next (SetEmbedding, SetLayer, SetFinal).
    /// <paramref name="dependentLaunch"/>: see DependentLaunch (null: UseDependentLaunch decides).</summary>
    public CudaDecodeGraph(CudaDevice device, DecodeModelShape shape, int rows, int capacity, bool? dependentLaunch = null)
    {
        Validate(shape, rows, capacity);
        _device = device;
        Shape = shape;
        Rows = rows;
        Capacity = capacity;
        DependentLaunch = _overlap = dependentLaunch ?? UseDependentLaunch(device);
        _gemv = new CudaGemv(device, DependentLaunch);
        _attention = new CudaPagedAttention(device, DependentLaunch);
        int c = shape.Hidden, hd = shape.Heads * shape.HeadDim;
        _x = Floats((long)rows * c);
        _qkv = Floats((long)rows * shape.QkvRows);
        _q = Floats((long)rows * hd);
        _attn = Floats((long)rows * hd);
        _h = Floats((long)rows * shape.Intermediate);
        _logits = Floats((long)rows * shape.Vocab);
        _argmax = Own(device.Allocate<ulong>(rows));
        _kvLen = Own(device.Allocate<int>(rows));
        _rowIndex = Own(device.Upload<int>([.. Enumerable.Range(0, rows)])); // row r is sequence r, cache block r, cache row r
        _position = Own(device.Allocate<int>(rows));
        _token = Own(device.Allocate<int>(rows));
        _promptLen = Own(device.Allocate<int>(rows));
        _prompt = Own(device.Allocate<int>((long)rows * capacity));
        _tokens = Own(device.Allocate<int>((long)rows * capacity));
        var (cos, sin) = RopeTables(shape, capacity);
        _cos = Own(device.Upload<float>(cos));
        _sin = Own(device.Upload<float>(sin));
        _attentionShape = new CudaPagedAttention.Shape(rows, shape.Heads, shape.KvHeads, shape.HeadDim, rows, capacity, rows, 1, capacity, 1f / MathF.Sqrt(shape.HeadDim));
        _splits = _attention.Splits(_attentionShape);
        long workspace = CudaPagedAttention.WorkspaceBytes(_attentionShape, _splits);
        _workspace = workspace > 0 ? Own(device.Allocate<byte>(workspace)) : null;
        _layers = [.. Enumerable.Range(0, shape.Layers).Select(_ => new Layer())];
        foreach (var layer in _layers)
        {
            layer.KCache = Floats((long)rows * capacity * shape.KvHeads * shape.HeadDim);
            layer.VCache = Floats((long)rows * capacity * shape.KvHeads * shape.HeadDim);
        }
    }

    /// <summary>The environment variable that turns DependentLaunch on ("1") on compute capability 9.0 and later, until a GPU has timed it.</summary>
    public const string DependentLaunchVariable = "TEMPER_DECODE_PDL";

    /// <summary>Whether every kernel of a step after the first may start before the one before it has finished (programmatic
    /// dependent launch; the kernels' compute_90 builds, Ptx/*.sm90.ptx, which wait for it first, grid_dependency.cuh):
    /// the blocks of the next kernel are resident, and each GEMV warp's first weight copies in flight, while the kernel
    /// before drains, instead of after a gap. The same sums in the same order either way.</summary>
    public bool DependentLaunch { get; }

    /// <summary>TEMPER_DECODE_PDL=1 on a device of compute capability 9.0 or later.</summary>
    public static bool UseDependentLaunch(CudaDevice device) =>
        Environment.GetEnvironmentVariable(DependentLaunchVariable) == "1" && device.ComputeCapability.Major >= 9;

    private bool _overlap; // DependentLaunch, off while Profile captures

    public DecodeModelShape Shape { get; }
    public int Rows { get; }
    public int Capacity { get; }

    /// <summary>Kernel launches one captured step holds (its graph's nodes); 0 before the first step.</summary>
    public long StepNodes => _graph?.NodeCount ?? 0;

    /// <summary>Bytes of weights a step reads: every matrix once (the embedding row aside).</summary>
    public long WeightBytesPerStep { get; private set; }

    /// <summary>The token embedding [V,C] as bf16 bits; also the LM head unless SetFinal gives one.</summary>
    public void SetEmbedding(ReadOnlySpan<ushort> embed)
    {
        Require(embed.Length, (long)Shape.Vocab * Shape.Hidden, "the embedding");
        _embed = Replace(_embed, Bf16(embed));
    }

    public void SetLayer(int index, DecodeLayerWeights w)
    {
        if ((uint)index >= (uint)_layers.Length) throw new ArgumentOutOfRangeException(nameof(index), $"layer {index} of {_layers.Length}");
        var s = Shape;
        int c = s.Hidden, hd = s.Heads * s.HeadDim, kvd = s.KvHeads * s.HeadDim, f = s.Intermediate;
        string at = $"layer {index}";
        Require(w.InputNorm.Length, c, $"{at} input norm");
        Require(w.PostAttentionNorm.Length, c, $"{at} post-attention norm");
        Require(w.Q.Length, (long)hd * c, $"{at} q");
        Require(w.K.Length, (long)kvd * c, $"{at} k");
        Require(w.V.Length, (long)kvd * c, $"{at} v");
        Require(w.O.Length, (long)c * hd, $"{at} o");
        Require(w.Gate.Length, (long)f * c, $"{at} gate");
        Require(w.Up.Length, (long)f * c, $"{at} up");
        Require(w.Down.Length, (long)c * f, $"{at} down");
        var l = _layers[index];
        l.InputNorm = Replace(l.InputNorm, Own(_device.Upload(w.InputNorm)));
        l.PostNorm = Replace(l.PostNorm, Own(_device.Upload(w.PostAttentionNorm)));
        var qkv = Own(_device.Allocate<ushort>((long)s.QkvRows * c));
        l.Qkv = Replace(l.Qkv, qkv);
        CopyAt(w.Q, qkv, 0);
        CopyAt(w.K, qkv, (long)hd * c);
        CopyAt(w.V, qkv, (long)(hd + kvd) * c);
        bool anyQkvBias = !w.QBias.IsEmpty || !w.KBias.IsEmpty || !w.VBias.IsEmpty;
        if (anyQkvBias)
        {
            var bias = new float[s.QkvRows];
            Place(w.QBias, bias, 0, hd, $"{at} q bias");
            Place(w.KBias, bias, hd, kvd, $"{at} k bias");
            Place(w.VBias, bias, hd + kvd, kvd, $"{at} v bias");
            l.QkvBias = Replace(l.QkvBias, Own(_device.Upload<float>(bias)));
        }
        l.QNorm = Replace(l.QNorm, Bias(w.QNorm, s.HeadDim, $"{at} q head norm"));
        l.KNorm = Replace(l.KNorm, Bias(w.KNorm, s.HeadDim, $"{at} k head norm"));
        if ((l.QNorm == null) != (l.KNorm == null)) throw new ArgumentException($"decode graph: {at} has a q head norm without a k head norm, or the reverse");
        l.O = Replace(l.O, Bf16(w.O));
        l.OBias = Replace(l.OBias, Bias(w.OBias, c, $"{at} o bias"));
        l.Gate = Replace(l.Gate, Bf16(w.Gate));
        l.Up = Replace(l.Up, Bf16(w.Up));
        l.GateBias = Replace(l.GateBias, Bias(w.GateBias, f, $"{at} gate bias"));
        l.UpBias = Replace(l.UpBias, Bias(w.UpBias, f, $"{at} up bias"));
        l.Down = Replace(l.Down, Bf16(w.Down));
        l.DownBias = Replace(l.DownBias, Bias(w.DownBias, c, $"{at} down bias"));
    }

    /// <summary>The final norm [C] and an LM head [V,C] as bf16 bits (empty: the embedding, tied).</summary>
    public void SetFinal(ReadOnlySpan<float> finalNorm, ReadOnlySpan<ushort> lmHead)
    {
        Require(finalNorm.Length, Shape.Hidden, "the final norm");
        _finalNorm = Replace(_finalNorm, Own(_device.Upload(finalNorm)));
        if (!lmHead.IsEmpty)
        {
            Require(lmHead.Length, (long)Shape.Vocab * Shape.Hidden, "the LM head");
            _lmHead = Replace(_lmHead, Bf16(lmHead));
        }
    }

    /// <summary>Sets every row back to position 0 with its prompt (1 to Capacity tokens, each inside the vocabulary).</summary>
    public void Start(IReadOnlyList<int[]> prompts)
    {
        if (prompts.Count != Rows) throw new ArgumentException($"{prompts.Count} prompts for a graph of {Rows} rows");
        var padded = new int[Rows * Capacity];
        var lengths = new int[Rows];
        for (int r = 0; r < Rows; r++)
        {
            var p = prompts[r];
            if (p.Length == 0 || p.Length > Capacity) throw new ArgumentException($"prompt {r} has {p.Length} tokens; 1 to {Capacity} fit");
            foreach (int id in p)
                if ((uint)id >= (uint)Shape.Vocab) throw new ArgumentException($"prompt {r}: token id {id} is outside the vocabulary (size {Shape.Vocab})");
            p.CopyTo(padded, r * Capacity);
            lengths[r] = p.Length;
        }
        _device.CopyToDevice<int>(padded, _prompt);
        _device.CopyToDevice<int>(padded, _tokens);
        _device.CopyToDevice<int>(lengths, _promptLen);
        _device.CopyToDevice<int>(new int[Rows], _position);
        _device.CopyToDevice<int>([.. prompts.Select(p => p[0])], _token);
        (_promptLengths, _hostPrompts) = (lengths, padded);
        Position = 0;
    }

    /// <summary>The position every row's next step feeds (0 after Start).</summary>
    public int Position { get; private set; }

    /// <summary>Queues <paramref name="count"/> steps (graph replays) without waiting for them.</summary>
    public void Step(int count = 1)
    {
        if (_promptLengths.Length == 0) throw new InvalidOperationException("CudaDecodeGraph: Start the rows before stepping");
        if (count < 0 || Position + count > Capacity - 1)
            throw new ArgumentOutOfRangeException(nameof(count), $"{count} more steps from position {Position} pass the capacity of {Capacity} positions");
        if (count == 0) return;
        if (_graph == null)
        {
            // The first step runs uncaptured: it loads the modules, which capture would not allow.
            Prepare();
            LaunchStep();
            _graph = CudaGraph.Capture(_device.Stream, LaunchStep);
            count--;
            Position++;
        }
        for (int i = 0; i < count; i++) _graph.Launch(_device.Stream);
        Position += count;
    }

    /// <summary>Waits for the queued steps.</summary>
    public void Wait() => _device.Synchronize();

    /// <summary>Waits for the queued steps and returns the last step's logits [R,V].</summary>
    public float[] Logits()
    {
        _device.Synchronize();
        return _device.Download<float>(_logits);
    }

    /// <summary>Waits for the queued steps and returns each row's tokens at positions 0..Position (prompt, then generated).</summary>
    public int[][] Tokens()
    {
        _device.Synchronize();
        var all = _device.Download<int>(_tokens);
        return [.. Enumerable.Range(0, Rows).Select(r => all.AsSpan(r * Capacity, Position + 1).ToArray())];
    }

    /// <summary>Waits for the queued steps and returns the token row <paramref name="row"/> feeds next (the one at Position).</summary>
    public int Token(int row)
    {
        CheckRow(row);
        _device.Synchronize();
        var one = new int[1];
        using var view = CudaDeviceMemory.Borrow(_token.Pointer + 4 * (ulong)row, 4, _device.Context);
        _device.CopyToHost<int>(view, one);
        return one[0];
    }

    /// <summary>Replaces the token row <paramref name="row"/> feeds next (at Position) by one the host chose,
    /// e.g. sampled from Logits(), in place of the device's argmax.</summary>
    public void Override(int row, int token)
    {
        CheckRow(row);
        if ((uint)token >= (uint)Shape.Vocab) throw new ArgumentException($"token id {token} is outside the vocabulary (size {Shape.Vocab})");
        ReadOnlySpan<int> one = [token];
        using var tokenView = CudaDeviceMemory.Borrow(_token.Pointer + 4 * (ulong)row, 4, _device.Context);
        using var tokensView = CudaDeviceMemory.Borrow(_tokens.Pointer + 4 * (ulong)((long)row * Capacity + Position), 4, _device.Context);
        _device.CopyToDevice(one, tokenView);
        _device.CopyToDevice(one, tokensView);
    }

    private void CheckRow(int row)
    {
        if ((uint)row >= (uint)Rows) throw new ArgumentOutOfRangeException(nameof(row), $"row {row} of {Rows}");
    }

    /// <summary>Greedy generation: each row's prompt, then up to maxNew tokens, ending a row after a stop id.
    /// Returns the generated tokens of each row (the stop id included). Steps are queued syncEvery at a time.</summary>
    public int[][] Generate(IReadOnlyList<int[]> prompts, int maxNew, IReadOnlyCollection<int>? stopIds = null, int syncEvery = 16)
    {
        if (maxNew < 0) throw new ArgumentOutOfRangeException(nameof(maxNew), "maxNew must be >= 0");
        Start(prompts);
        int longest = _promptLengths.Max();
        if (longest + maxNew > Capacity) throw new ArgumentOutOfRangeException(nameof(maxNew), $"a {longest}-token prompt and {maxNew} new tokens pass the capacity of {Capacity} positions");
        int steps = longest - 1 + maxNew;
        while (Position < steps)
        {
            Step(Math.Min(Math.Max(1, syncEvery), steps - Position));
            if (stopIds is { Count: > 0 } && AllStopped(Tokens(), maxNew, stopIds)) break;
        }
        return [.. Tokens().Select((t, r) => Generated(t, _promptLengths[r], maxNew, stopIds))];
    }

    private static int[] Generated(int[] tokens, int promptLength, int maxNew, IReadOnlyCollection<int>? stopIds)
    {
        var g = tokens.AsSpan(Math.Min(promptLength, tokens.Length), Math.Clamp(tokens.Length - promptLength, 0, maxNew));
        if (stopIds is { Count: > 0 })
            for (int i = 0; i < g.Length; i++)
                if (stopIds.Contains(g[i])) return g[..(i + 1)].ToArray();
        return g.ToArray();
    }

    private bool AllStopped(int[][] tokens, int maxNew, IReadOnlyCollection<int> stopIds)
    {
        for (int r = 0; r < Rows; r++)
        {
            var g = Generated(tokens[r], _promptLengths[r], maxNew, stopIds);
            if (g.Length == 0 || !stopIds.Contains(g[^1])) return false;
        }
        return true;
    }

    private void Prepare()
    {
        if (_embed == null || _finalNorm == null) throw new InvalidOperationException("CudaDecodeGraph: set the embedding and the final weights before stepping");
        for (int i = 0; i < _layers.Length; i++)
            if (_layers[i].Qkv == null) throw new InvalidOperationException($"CudaDecodeGraph: layer {i} has no weights");
        WeightBytesPerStep = _layers.Sum(l => l.Qkv!.ByteLength + l.O!.ByteLength + l.Gate!.ByteLength + l.Up!.ByteLength + l.Down!.ByteLength) + (_lmHead ?? _embed).ByteLength;
        _embedFn ??= CudaDriver.GetFunction(Module(), "decode_embed");
        _ropeFn ??= CudaDriver.GetFunction(Module(), "decode_rope_append");
        _nextFn ??= CudaDriver.GetFunction(Module(), "decode_next");
    }

    // The kernels of one step, in order, on the device's stream (run once, then captured); mark(name) after
    // each (Profile's timing events).
    private void LaunchStep() => LaunchStep(null);

    private void LaunchStep(Action<string>? mark)
    {
        var s = Shape;
        int rows = Rows, c = s.Hidden, hd = s.Heads * s.HeadDim, f = s.Intermediate;
        _device.Launch(_embedFn!, Grid((long)rows * c), (Threads, 1, 1),
            new CudaKernelArguments().Add(_embed!).Add(_token).Add(_position).Add(_x).Add(_kvLen).Add(_argmax).Add(rows).Add(c));
        mark?.Invoke("embed");
        foreach (var l in _layers)
        {
            if (rows == 1 && l.QNorm == null && l.KNorm == null) // batch 1: RoPE and the append in the GEMV's epilogue
            {
                _gemv.QkvRope(l.Qkv!, _x, l.InputNorm, s.RmsNormEps, l.QkvBias, _position, _rowIndex, _cos, _sin, _q, l.KCache!, l.VCache!,
                    s.Heads, s.KvHeads, s.HeadDim, Capacity, c);
                mark?.Invoke("q, cache = RoPE(norm(x) Wqkv) (GEMV)");
            }
            else
            {
                _gemv.Forward(l.Qkv!, _x, _qkv, rows, s.QkvRows, c, l.InputNorm, s.RmsNormEps, l.QkvBias);
                mark?.Invoke("qkv = norm(x) Wqkv (GEMV)");
                _device.Launch(_ropeFn!, Grid((long)rows * (s.Heads + 2 * s.KvHeads) * (s.HeadDim / 2)), (Threads, 1, 1),
                    new CudaKernelArguments().Add(_qkv).Add(_position).Add(_rowIndex).Add(_cos).Add(_sin).Add(_q).Add(l.KCache!).Add(l.VCache!)
                        .Add(rows).Add(s.Heads).Add(s.KvHeads).Add(s.HeadDim / 2).Add(Capacity)
                        .Add(l.QNormPointer).Add(l.KNormPointer).Add(s.RmsNormEps), overlapPrevious: _overlap);
                mark?.Invoke("RoPE + cache append");
            }
            _attention.Forward(_q, l.KCache!, l.VCache!, _attn, _rowIndex, _rowIndex, _kvLen, _workspace, _attentionShape, _splits);
            mark?.Invoke(_splits > 1 ? $"attention ({_splits} splits, merged by the last)" : "attention");
            _gemv.Forward(l.O!, _attn, _x, rows, c, hd, bias: l.OBias, residual: _x);
            mark?.Invoke("x += a Wo (GEMV)");
            _gemv.SwiGlu(l.Gate!, l.Up!, _x, _h, rows, f, c, l.PostNorm, s.RmsNormEps, l.GateBias, l.UpBias);
            mark?.Invoke("h = SwiGLU(norm(x) Wg, norm(x) Wu) (GEMV)");
            _gemv.Forward(l.Down!, _h, _x, rows, c, f, bias: l.DownBias, residual: _x);
            mark?.Invoke("x += h Wd (GEMV)");
        }
        _gemv.Forward(_lmHead ?? _embed!, _x, _logits, rows, s.Vocab, c, _finalNorm, s.RmsNormEps, argmax: _argmax);
        mark?.Invoke("logits = norm(x) Wlm + argmax (GEMV)");
        _device.Launch(_nextFn!, Grid(rows), (Threads, 1, 1),
            new CudaKernelArguments().Add(_argmax).Add(_prompt).Add(_promptLen).Add(_token).Add(_position).Add(_tokens).Add(rows).Add(Capacity),
            overlapPrevious: _overlap);
        mark?.Invoke("next token");
    }

    /// <summary>cos and sin [T, D/2] of p invFreq[i] times the scaling, as the RoPE reference computes them (an f32 angle).</summary>
    public static (float[] Cos, float[] Sin) RopeTables(DecodeModelShape shape, int capacity)
    {
        int half = shape.RopeInvFreq.Length;
        var cos = new float[(long)capacity * half];
        var sin = new float[(long)capacity * half];
        for (int p = 0; p < capacity; p++)
            for (int i = 0; i < half; i++)
            {
                float angle = p * shape.RopeInvFreq[i];
                cos[p * half + i] = MathF.Cos(angle) * shape.RopeScaling;
                sin[p * half + i] = MathF.Sin(angle) * shape.RopeScaling;
            }
        return (cos, sin);
    }

    /// <summary>Throws an ArgumentException naming what the graph's kernels do not take (rows, capacity, head dim, widths).</summary>
    public static void Validate(DecodeModelShape s, int rows, int capacity)
    {
        if (rows < 1 || rows > CudaGemv.MaxRows) throw new ArgumentOutOfRangeException(nameof(rows), $"{rows} rows; a decode graph takes 1 to {CudaGemv.MaxRows}");
        if (capacity < 2) throw new ArgumentOutOfRangeException(nameof(capacity), $"capacity {capacity}: at least 2 positions");
        if (s.Layers < 1 || s.Hidden < 1 || s.Heads < 1 || s.KvHeads < 1 || s.Intermediate < 1 || s.Vocab < 1)
            throw new ArgumentException($"decode graph: every size must be positive ({s})");
        if (s.HeadDim != 64 && s.HeadDim != 128) throw new ArgumentException($"decode graph: head dim {s.HeadDim} (the paged attention kernel takes 64 or 128)");
        if (s.Heads % s.KvHeads != 0) throw new ArgumentException($"decode graph: {s.Heads} heads are not a multiple of {s.KvHeads} kv heads");
        if (s.RopeInvFreq.Length != s.HeadDim / 2) throw new ArgumentException($"decode graph: {s.RopeInvFreq.Length} RoPE frequencies for head dim {s.HeadDim}");
        foreach (var (k, what) in new[] { (s.Hidden, "hidden size"), (s.Heads * s.HeadDim, "heads x head dim"), (s.Intermediate, "intermediate size") })
            if (k % 8 != 0) throw new ArgumentException($"decode graph: the {what} {k} is not a multiple of 8 (the GEMV's 16-byte loads)");
    }

    private static (uint, uint, uint) Grid(long threads) => ((uint)((threads + Threads - 1) / Threads), 1, 1);

    private static void Require(long got, long want, string what)
    {
        if (got != want) throw new ArgumentException($"decode graph: {what} has {got} values, the shape needs {want}");
    }

    private static void Place(ReadOnlySpan<float> bias, float[] into, int at, int count, string what)
    {
        if (bias.IsEmpty) return;
        Require(bias.Length, count, what);
        bias.CopyTo(into.AsSpan(at, count));
    }

    // An optional f32 vector (a bias, or a head norm): null when empty.
    private CudaDeviceMemory? Bias(ReadOnlySpan<float> bias, int count, string what)
    {
        if (bias.IsEmpty) return null;
        Require(bias.Length, count, what);
        return Own(_device.Upload(bias));
    }

    private CudaDeviceMemory Bf16(ReadOnlySpan<ushort> bits) => Own(_device.Upload(bits));

    private void CopyAt(ReadOnlySpan<ushort> bits, CudaDeviceMemory into, long at)
    {
        using var view = CudaDeviceMemory.Borrow(into.Pointer + 2 * (ulong)at, 2L * bits.Length, _device.Context);
        _device.CopyToDevice(bits, view);
    }

    private CudaDeviceMemory Floats(long count) => Own(_device.Allocate<float>(count));

    private CudaDeviceMemory Own(CudaDeviceMemory m)
    {
        _owned.Add(m);
        return m;
    }

    private CudaDeviceMemory? Replace(CudaDeviceMemory? old, CudaDeviceMemory? fresh)
    {
        if (_graph != null) throw new InvalidOperationException("CudaDecodeGraph: weights are set before the first step (the graph holds their addresses)");
        if (old != null)
        {
            _owned.Remove(old);
            old.Dispose();
        }
        return fresh;
    }

    private CudaModuleHandle Module() => _module ??= _device.LoadModule(KernelPtx.Read(DependentLaunch ? "decode_step.sm90.ptx" : "decode_step.ptx"), out _);

    // Whether the step's launches after the first may overlap the kernel before them (Profile turns it off while it captures).
    private void Overlap(bool on) => _overlap = _gemv.OverlapPrevious = _attention.OverlapPrevious = on && DependentLaunch;

    public void Dispose()
    {
        _prefill?.Dispose();
        _graph?.Dispose();
        if (_profile is { } p)
        {
            p.Graph.Dispose();
            foreach (var e in p.Events) e.Dispose();
        }
        _gemv.Dispose();
        _attention.Dispose();
        foreach (var m in _owned) m.Dispose();
        _module?.Dispose();
    }
}
