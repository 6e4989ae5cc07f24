// CudaDecodeGraph.Prefill: the first min(prompt length) - 1 tokens of every row through the layers in
// chunks of up to PrefillChunk tokens x [PrefillChunk, width] f32 buffers, on the GEMM (CudaLinear: bf16
// tensor cores, activations rounded to bf16), flash attention (CudaAttention, causal, the chunk's queries at
// positions t0.. over the row's cache), RMSNorm and SwiGLU kernels, uncaptured; decode_rope_append writes
// the chunk's keys and values into the row's cache as steps would. The graph's steps then go on from there.
using Temper.Cuda;
using Temper.Cuda.Driver;

namespace Temper.Kernels.Cuda;

public sealed partial class CudaDecodeGraph
{
    /// <summary>Runs the first min(prompt length) - 1 tokens of every row's prompt through the layers as whole
    /// chunks of up to PrefillChunk tokens (the GEMM, flash attention, RMSNorm and SwiGLU kernels of
    /// Temper.Kernels.Cuda, uncaptured), filling the caches as that many steps would; the rows then stand at
    /// that position, and the remaining prompt tokens and generation go through the graph. Call after Start.</summary>
    public void Prefill()
    {
        if (_promptLengths.Length == 0) throw new InvalidOperationException("CudaDecodeGraph: Start the rows before prefilling");
        if (Position != 0) throw new InvalidOperationException($"CudaDecodeGraph: prefill runs from position 0, not {Position}");
        int n = _promptLengths.Min() - 1;
        if (n < 1) return;
        Prepare();
        _prefill ??= new Prefiller(this);
        for (int r = 0; r < Rows; r++)
            for (int t0 = 0; t0 < n; t0 += PrefillChunk)
                _prefill.Chunk(r, t0, Math.Min(PrefillChunk, n - t0));
        _device.CopyToDevice<int>([.. Enumerable.Repeat(n, Rows)], _position);
        _device.CopyToDevice<int>([.. Enumerable.Range(0, Rows).Select(r => _hostPrompts[r * Capacity + n])], _token);
        Position = n;
    }

    /// <summary>Tokens a prefill chunk takes at most.</summary>
    public const int PrefillChunk = 256;

    // The prefill's kernels and buffers [PrefillChunk, width], made on the first Prefill.
    private sealed class Prefiller : IDisposable
    {
        private readonly CudaDecodeGraph _g;
        private readonly CudaLinear _linear;
        private readonly CudaAttention _attention;
        private readonly CudaRmsNorm _norm;
        private readonly CudaSwiGlu _swiglu;
        private readonly CudaDeviceMemory _x, _hn, _qkv, _q, _attn, _gate, _up, _positions, _cacheRows;

        public Prefiller(CudaDecodeGraph g)
        {
            _g = g;
            var d = g._device;
            var s = g.Shape;
            int c = PrefillChunk, hd = s.Heads * s.HeadDim;
            (_linear, _attention, _norm, _swiglu) = (new CudaLinear(d), new CudaAttention(d), new CudaRmsNorm(d), new CudaSwiGlu(d));
            _x = d.Allocate<float>((long)c * s.Hidden);
            _hn = d.Allocate<float>((long)c * s.Hidden);
            _qkv = d.Allocate<float>((long)c * s.QkvRows);
            _q = d.Allocate<float>((long)c * hd);
            _attn = d.Allocate<float>((long)c * hd);
            _gate = d.Allocate<float>((long)c * s.Intermediate);
            _up = d.Allocate<float>((long)c * s.Intermediate);
            _positions = d.Allocate<int>(c);
            _cacheRows = d.Allocate<int>(c);
        }

        // Tokens t0..t0+n-1 of row r's prompt through every layer into row r's caches.
        public void Chunk(int r, int t0, int n)
        {
            var g = _g;
            var d = g._device;
            var s = g.Shape;
            int c = s.Hidden, hd = s.Heads * s.HeadDim, f = s.Intermediate;
            d.CopyToDevice<int>([.. Enumerable.Range(t0, n)], _positions);
            d.CopyToDevice<int>([.. Enumerable.Repeat(r, n)], _cacheRows);
            using var tokens = CudaDeviceMemory.Borrow(g._prompt.Pointer + 4 * (ulong)((long)r * g.Capacity + t0), 4L * n, d.Context);
            d.Launch(g._embedFn!, Grid((long)n * c), (Threads, 1, 1),
                new CudaKernelArguments().Add(g._embed!).Add(tokens).Add(_positions).Add(_x).Add(0UL).Add(0UL).Add(n).Add(c));
            long cacheRow = (long)r * g.Capacity * s.KvHeads * s.HeadDim * 4;
            var shape = new CudaAttention.Shape(1, n, s.Heads, g.Capacity, s.KvHeads, s.HeadDim, t0 + n, t0, 1f / MathF.Sqrt(s.HeadDim));
            foreach (var l in g._layers)
            {
                _norm.Forward(_x, l.InputNorm!, s.RmsNormEps, _hn, null, n, c);
                _linear.Forward(_hn, new LinearWeight.Bf16(l.Qkv!), l.QkvBias, _qkv, n, c, s.QkvRows);
                d.Launch(g._ropeFn!, Grid((long)n * (s.Heads + 2 * s.KvHeads) * (s.HeadDim / 2)), (Threads, 1, 1),
                    new CudaKernelArguments().Add(_qkv).Add(_positions).Add(_cacheRows).Add(g._cos).Add(g._sin).Add(_q).Add(l.KCache!).Add(l.VCache!)
                        .Add(n).Add(s.Heads).Add(s.KvHeads).Add(s.HeadDim / 2).Add(g.Capacity)
                        .Add(l.QNormPointer).Add(l.KNormPointer).Add(s.RmsNormEps));
                using var k = CudaDeviceMemory.Borrow(l.KCache!.Pointer + (ulong)cacheRow, 4L * g.Capacity * s.KvHeads * s.HeadDim, d.Context);
                using var v = CudaDeviceMemory.Borrow(l.VCache!.Pointer + (ulong)cacheRow, 4L * g.Capacity * s.KvHeads * s.HeadDim, d.Context);
                _attention.Forward(_q, k, v, _attn, null, null, null, shape);
                _linear.Forward(_attn, new LinearWeight.Bf16(l.O!), l.OBias, _x, n, hd, c, accumulate: true);
                _norm.Forward(_x, l.PostNorm!, s.RmsNormEps, _hn, null, n, c);
                _linear.Forward(_hn, new LinearWeight.Bf16(l.Gate!), l.GateBias, _gate, n, c, f);
                _linear.Forward(_hn, new LinearWeight.Bf16(l.Up!), l.UpBias, _up, n, c, f);
                _swiglu.Forward(_gate, _up, _gate, (long)n * f);
                _linear.Forward(_gate, new LinearWeight.Bf16(l.Down!), l.DownBias, _x, n, f, c, accumulate: true);
            }
        }

        public void Dispose()
        {
            _linear.Dispose();
            _attention.Dispose();
            _norm.Dispose();
            _swiglu.Dispose();
            foreach (var m in new[] { _x, _hn, _qkv, _q, _attn, _gate, _up, _positions, _cacheRows }) m.Dispose();
        }
    }
}
