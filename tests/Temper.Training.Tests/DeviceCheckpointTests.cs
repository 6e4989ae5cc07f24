// A checkpoint restores trained weights and AdamW state into a run whose tensors live in device memory
// (ILGPU's CPU accelerator here; CUDA the same way): save after one step, take another step, load, and
// every value and moment is back to the saved bits. Host spans of device tensors are never touched.
using Temper.Core;
using Temper.Core.SafeTensors;
using Temper.Kernels.Ilgpu;
using Temper.Models;
using Temper.Training;
using Temper.Training.Optim;
using Temper.Training.Runs;

namespace Temper.Tests;

public class DeviceCheckpointTests
{
    [Fact]
    public void Checkpoint_restores_weights_and_optimizer_state_on_a_device_backend()
    {
        using var be = IlgpuBackend.Create("ilgpu-cpu");
        string dir = Fixtures.Hf("llama-tiny");
        using var lm = LanguageModel.Load(dir, be);
        using var ps = TrainableParameters.Full(lm.Weights, be);
        using var opt = new AdamW(ps, be, new AdamWOptions(WeightDecay: 0.1f));
        using var r = SafetensorsFile.Open(Path.Combine(dir, "reference.safetensors"));
        var ids = r.Get("input_ids").Span<int>().ToArray();
        var labels = r.Get("labels").Span<int>().ToArray();
        int b = r.Get("input_ids").Shape[0];
        var backprop = new DecoderBackprop(lm.Decoder);
        void Step()
        {
            ps.ZeroGrads();
            backprop.Run(ids, labels, [], b, 0.01f, ps.GradOf);
            opt.Update(1e-3f);
        }
        Step();
        var saved = ps.All.Select(p => be.ToHost(p.Value).ToFloatArray()).ToList();
        var savedState = opt.State().Select(kv => be.ToHost(kv.Value).ToFloatArray()).ToList();
        string run = Directory.CreateTempSubdirectory("temper-devckpt-").FullName;
        try
        {
            string ck = Checkpoint.Save(run, new TrainerState(1, 0, 1, "sha"), ps, opt, be);
            Step();
            Assert.NotEqual(saved[0], be.ToHost(ps.All[0].Value).ToFloatArray());
            var state = Checkpoint.Load(ck, ps, opt);
            Assert.Equal(1, state.Step);
            for (int i = 0; i < saved.Count; i++) Assert.Equal(saved[i], be.ToHost(ps.All[i].Value).ToFloatArray());
            var restored = opt.State().Select(kv => be.ToHost(kv.Value).ToFloatArray()).ToList();
            for (int i = 0; i < savedState.Count; i++) Assert.Equal(savedState[i], restored[i]);
            Assert.False(ps.All[0].Value.IsHost);
        }
        finally { Directory.Delete(run, true); }
    }

    [Fact]
    public void Zeroing_gradients_on_a_device_backend_clears_a_skipped_steps_nan()
    {
        // A step whose loss or grad norm is not finite is skipped; the next must start from zero gradients. On a device
        // backend ZeroGrads scaled them by 0, which keeps NaN, so every later step was skipped too until the run aborted.
        using var be = IlgpuBackend.Create("ilgpu-cpu");
        using var lm = LanguageModel.Load(Fixtures.Hf("llama-tiny"), be);
        using var ps = TrainableParameters.Full(lm.Weights, be);
        be.Scale(ps.All[0].Grad, float.NaN); // 0 x NaN: every element NaN
        Assert.True(double.IsNaN(ps.GradNorm()));
        ps.ZeroGrads();
        Assert.Equal(0d, ps.GradNorm());
    }
}
