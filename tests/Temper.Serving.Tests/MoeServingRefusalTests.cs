// A mixture-of-experts model (MoeTiny's Mixtral) is refused by the serving engine and its paged decoder in one
// line naming config.json and what Temper runs such a model for, before any KV block is allocated.
using Temper.Core;
using Temper.Kernels.Cpu;
using Temper.Models;
using Temper.Serving.Kv;
using Temper.Serving.Scheduling;
using Temper.Tests;

namespace Temper.Serving.Tests;

public sealed class MoeServingRefusalTests
{
    [Fact]
    public void The_serving_engine_and_the_paged_decoder_refuse_an_moe_model_in_one_line()
    {
        using var lm = LanguageModel.Load(MoeTiny.Mixtral.Folder, new CpuBackend(1));
        var e = Assert.Throws<TemperException>(() => new ServingEngine(lm.Decoder, new ServingOptions { BlockSize = 4, Blocks = 8 }));
        Assert.DoesNotContain('\n', e.Message);
        Assert.Contains("config.json: model_type 'mixtral' is a mixture-of-experts model, which Temper runs for inference only (logits, generate, chat", e.Message);
        Assert.Contains("serving", e.Message);
        using var cache = new PagedKvCache(lm.Config, lm.Decoder.Backend, 8, 4);
        e = Assert.Throws<TemperException>(() => new PagedDecoder(lm.Decoder, cache, null));
        Assert.Contains("mixture-of-experts", e.Message);
    }
}
