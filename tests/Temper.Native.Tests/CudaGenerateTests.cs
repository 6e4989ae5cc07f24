// temper_model_load / temper_model_generate on TEMPER_DEVICE_CUDA (generation through the CUDA decode
// graph). Always: a model whose head dim the graph's kernels do not take (the llama-tiny fixture's 16) is
// TEMPER_E_UNSUPPORTED naming it. With a CUDA driver (a GPU, or the CUDA emulator test.sh loads for the
// trait Kernels=cuda): a tiny Qwen2-shaped model written here in bf16 (head dim 64), and a Qwen3-shaped one
// (q/k head norms, no biases), generates the same
// greedy tokens, with the same finish, on CUDA as on the CPU, and repetition-, frequency- and presence-penalised
// runs (picked on the host from the graph's logits) too; stop strings are TEMPER_E_UNSUPPORTED there.
using System.Runtime.InteropServices;
using System.Text;
using Temper.Core;
using Temper.Core.SafeTensors;
using Temper.Cuda.Driver;
using Temper.Kernels.Cpu;
using Temper.Models;
using Temper.Native;
using Temper.Native.Exports;

namespace Temper.Tests;

public sealed unsafe class CudaGenerateTests
{
    private static string LastError() => NativeFixture.LastError();

    private static int Load(string dir, TemperDevice device, out nint model)
    {
        nint m = 0;
        var o = ModelExports.Defaults;
        o.Device = (int)device;
        o.Threads = 1;
        fixed (byte* p = Encoding.UTF8.GetBytes(dir + "\0"))
        {
            int rc = ((delegate* unmanaged<byte*, TemperModelOptions*, nint*, int>)&ModelExports.ModelLoad)(p, &o, &m);
            model = m;
            return rc;
        }
    }

    private static int Free(nint model) => ((delegate* unmanaged<nint, int>)&ModelExports.ModelFree)(model);

    private static (int[] Ids, TemperGenerateResult Result) Generate(nint model, int[] prompt, TemperGenerateOptions o)
    {
        var ids = new int[o.MaxNewTokens];
        TemperGenerateResult r;
        int rc;
        fixed (int* p = prompt)
        fixed (int* outIds = ids)
            rc = ((delegate* unmanaged<nint, int*, int, TemperGenerateOptions*, delegate* unmanaged[Cdecl]<int, byte*, void*, int>, void*, int*, int, TemperGenerateResult*, int>)&GenerateExports.ModelGenerate)(
                model, p, prompt.Length, &o, null, null, outIds, ids.Length, &r);
        Assert.True(rc == 0, LastError());
        return (ids[..r.Generated], r);
    }

    [Fact]
    public void Cuda_load_of_a_head_dim_the_kernels_do_not_take_is_unsupported()
    {
        Assert.Equal((int)TemperStatus.Unsupported, Load(Fixtures.Hf("llama-tiny"), TemperDevice.Cuda, out var m));
        Assert.Equal(0, m);
        Assert.Contains("head dim 16", LastError());
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    [Trait("Kernels", "cuda")]
    public void Cuda_generation_gives_the_cpus_tokens(bool qwen3)
    {
        SkipWithoutCuda();
        string dir = Directory.CreateTempSubdirectory("temper-cuda-gen-").FullName;
        try
        {
            WriteTinyModel(dir, qwen3);
            Assert.True(Load(dir, TemperDevice.Cpu, out var cpu) == 0, LastError());
            Assert.True(Load(dir, TemperDevice.Cuda, out var gpu) == 0, LastError());
            try
            {
                int[] prompt = [3, 141, 59, 26];
                var o = GenerateExports.Defaults;
                o.MaxNewTokens = 6;
                o.IgnoreEos = 1;
                var want = Generate(cpu, prompt, o);
                var got = Generate(gpu, prompt, o);
                Assert.Equal(want.Ids, got.Ids);
                Assert.Equal(6, got.Result.Generated);
                Assert.Equal((int)TemperFinishReason.Length, got.Result.Finish);

                o.RepetitionPenalty = 1.5f;
                Assert.Equal(Generate(cpu, prompt, o).Ids, Generate(gpu, prompt, o).Ids);
                o.RepetitionPenalty = 1f;
                o.FrequencyPenalty = -2f;   // the random model repeats nothing in 6 tokens: make it repeat
                o.PresencePenalty = -1f;
                var penalised = Generate(gpu, prompt, o).Ids;
                Assert.Equal(Generate(cpu, prompt, o).Ids, penalised);
                Assert.NotEqual(want.Ids, penalised);

                // Stop strings are the CPU generator's (the graph decoder has none): refused, not ignored.
                fixed (byte* stop = "x\0"u8)
                fixed (int* p = prompt)
                {
                    o.Stop = &stop;
                    o.StopCount = 1;
                    Assert.Equal((int)TemperStatus.Unsupported, ((delegate* unmanaged<nint, int*, int, TemperGenerateOptions*, delegate* unmanaged[Cdecl]<int, byte*, void*, int>, void*, int*, int, TemperGenerateResult*, int>)&GenerateExports.ModelGenerate)(
                        gpu, p, prompt.Length, &o, null, null, null, 0, null));
                }
                Assert.StartsWith("temper_model_generate: stop strings are not supported on TEMPER_DEVICE_CUDA", LastError());
            }
            finally
            {
                Assert.Equal(0, Free(cpu));
                Assert.Equal(0, Free(gpu));
            }
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    private static void SkipWithoutCuda()
    {
        try
        {
            CudaDriver.Init();
            Assert.SkipWhen(CudaDriver.DeviceCount() == 0, "no CUDA device");
        }
        catch (Exception e) when (e is CudaException or DllNotFoundException)
        {
            Assert.Skip($"no CUDA driver or device: {e.Message}");
        }
    }

    // config.json and model.safetensors (bf16 matrices, f32 norms) of a tiny Qwen2-shaped model (non-zero q/k/v
    // biases) or Qwen3-shaped one (no biases; q/k head norms away from 1).
    private static void WriteTinyModel(string dir, bool qwen3)
    {
        File.WriteAllText(Path.Combine(dir, "config.json"), (qwen3 ? """{"model_type": "qwen3", """ : """{"model_type": "qwen2", """) + """
             "hidden_size": 128, "intermediate_size": 256,
             "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 64, "vocab_size": 320,
             "rms_norm_eps": 1e-6, "tie_word_embeddings": false, "max_position_embeddings": 64, "rope_theta": 10000.0,
             "initializer_range": 0.08, "eos_token_id": 2}
            """);
        var cfg = ModelConfig.Load(dir);
        using var w = ModelWeights.Random(cfg, new CpuBackend(1), seed: 11, DType.BF16);
        var r = new Random(5);
        foreach (var l in w.Layers)
        {
            foreach (var b in new[] { l.Q.Bias, l.K.Bias, l.V.Bias }) if (b != null) foreach (ref float v in b.Floats) v = (float)(r.NextDouble() - 0.5);
            foreach (var n in new[] { l.QNorm, l.KNorm }) if (n != null) foreach (ref float v in n.Floats) v = 0.5f + (float)r.NextDouble();
        }
        var tensors = new List<Tensor> { w.Embed, w.FinalNorm, w.LmHead.Weight };
        foreach (var l in w.Layers)
        {
            tensors.AddRange(l.Norms.Select(n => n.Weight));
            foreach (var p in l.Projections)
            {
                tensors.Add(p.Weight);
                if (p.Bias != null) tensors.Add(p.Bias);
            }
        }
        SafetensorsWriter.Write(Path.Combine(dir, "model.safetensors"), tensors.Select(t => KeyValuePair.Create(t.Name!, t)));
    }
}
