// libtemper 0.4.0's adapter kinds, called in-process through function pointers as C calls them, on the llama-tiny
// fixture: temper_trainer_options' use_dora (the saved folder has use_dora true and a magnitude per module; logits
// mid-training equal the saved adapter's, so each step refreshed DoRA's cached norm), prompt_tuning_tokens and
// prefix_tuning_tokens (the loss falls over a few steps; generation during training differs from the base and the
// model is the base again once the trainer is freed; the saved folder has the right peft_type and
// LanguageModel.Load(..., adapterDir) gives the trainer's logits; an init_adapter of that kind continues it; TEXT
// init), temper_adapter_load / apply / remove / merge of DoRA, prompt and prefix folders (merge refused for the
// virtual tokens), a 0.3.0-sized temper_trainer_options taken without the new fields, and every refusal by name.
using System.Runtime.InteropServices;
using Temper.Core.SafeTensors;
using Temper.Kernels.Cpu;
using Temper.Models;
using Temper.Native;
using Temper.Native.Exports;

namespace Temper.Tests;

public sealed unsafe class AdapterKindsTests : NativeTrainingHarness
{
    private static readonly string DpoData = Path.Combine(ModelDir, "trainer", "dpo.jsonl");
    private static readonly string LoraAdapterDir = Path.Combine(ModelDir, "adapter");

    private nint Trainer(TemperTrainerOptions o, string? data = null, string? initAdapter = null, string? initText = null)
    {
        Assert.True(Init(o, data ?? SftData, out var t, initAdapter, initText: initText) == 0, LastError());
        return t;
    }

    /// <summary>temper_model_generate, sampled with a fixed seed (the fixture's greedy continuation is one token repeated,
    /// which a small change of the logits leaves as it is; a draw shows it).</summary>
    private int[] Generate(int tokens = 16)
    {
        var o = GenerateExports.Defaults;
        o.MaxNewTokens = tokens;
        o.IgnoreEos = 1;
        o.Greedy = 0;
        o.Seed = 7;
        var ids = new int[tokens];
        TemperGenerateResult r;
        fixed (int* p = Prompt)
        fixed (int* outIds = ids)
            Assert.True(((delegate* unmanaged<nint, int*, int, TemperGenerateOptions*, delegate* unmanaged[Cdecl]<int, byte*, void*, int>, void*, int*, int, TemperGenerateResult*, int>)&GenerateExports.ModelGenerate)(
                _model, p, Prompt.Length, &o, null, null, outIds, ids.Length, &r) == 0, LastError());
        Assert.Equal(tokens, r.Generated);
        return ids;
    }

    /// <summary>The .NET engine's logits for Prompt with the adapter folder applied as the CLI applies it (DoRA merged).</summary>
    private static float[] EngineLogits(string? adapterDir)
    {
        using var lm = LanguageModel.Load(ModelDir, new CpuBackend(1), adapterDir);
        using var t = lm.Logits(Prompt, 1);
        return t.ToFloatArray();
    }

    [Fact]
    public void Use_dora_trains_a_dora_adapter_whose_cached_norm_follows_each_step()
    {
        if (!Available) return;
        var baseLogits = Logits();
        var o = Quick(lr: 1e-2f);
        o.UseDora = 1;
        nint t = Trainer(o);
        string dir;
        try
        {
            Close(baseLogits, Logits(), "a fresh DoRA adapter (B = 0, m = ||W||_row)");   // also caches every view's norm
            var losses = Enumerable.Range(0, 6).Select(_ => Step(t)).ToArray();
            Assert.True(Falling(losses), $"DoRA loss does not fall step by step: {string.Join(", ", losses)}");
            dir = Save(t);
            // The model computes with the adapter being trained: after the steps, the saved adapter's logits
            // (a stale norm cached before the steps would give others).
            Close(EngineLogits(dir), Logits(), "logits mid-training vs the saved DoRA adapter merged by the engine");
        }
        finally
        {
            Free(t);
        }
        Close(baseLogits, Logits(), "the base after temper_trainer_free");
        var config = Config(dir);
        Assert.True(config["use_dora"]!.GetValue<bool>());
        Assert.Equal("LORA", config["peft_type"]!.GetValue<string>());
        var names = TensorNames(dir);
        Assert.Equal(7 * 2, names.Count(n => n.EndsWith(".lora_magnitude_vector", StringComparison.Ordinal)));
        Assert.Equal(7 * 2, names.Count(n => n.EndsWith(".lora_A.weight", StringComparison.Ordinal)));

        // temper_adapter_apply runs it unmerged (the magnitudes on the views), merge folds it in: the same logits.
        var trained = EngineLogits(dir);
        nint a = LoadAdapter(dir);
        try
        {
            Assert.True(Apply(a) == 0, LastError());
            Close(trained, Logits(), "DoRA applied unmerged");
            Assert.Equal(0, Remove());
            Close(baseLogits, Logits(), "DoRA removed");

            // An init_adapter that is a DoRA folder goes on as DoRA (use_dora not needed) and saves as DoRA.
            nint again = Trainer(Quick(), initAdapter: dir);
            Close(trained, Logits(), "continued DoRA adapter before its first step");
            Step(again);
            string dir2 = Save(again);
            Free(again);
            Assert.True(Config(dir2)["use_dora"]!.GetValue<bool>());

            Assert.True(Merge(a) == 0, LastError());
            Close(trained, Logits(), "DoRA merged");
        }
        finally
        {
            FreeAdapter(a);
        }
    }

    [Theory]
    [InlineData("PROMPT_TUNING")]
    [InlineData("PREFIX_TUNING")]
    public void Virtual_tokens_train_generate_save_and_apply(string peftType)
    {
        if (!Available) return;
        bool prompt = peftType == "PROMPT_TUNING";
        var baseLogits = Logits();
        var baseIds = Generate();
        var o = Quick(lr: 0.1f);
        if (prompt) o.PromptTuningTokens = 4;
        else o.PrefixTuningTokens = 4;
        nint t = Trainer(o);
        string dir;
        float[] trained;
        try
        {
            // The virtual tokens are attached from the start (random, not an identity like a fresh LoRA).
            Assert.NotEqual(baseIds, Generate());
            var losses = Enumerable.Range(0, 8).Select(_ => Step(t)).ToArray();
            Assert.True(Falling(losses), $"{peftType} loss does not fall step by step: {string.Join(", ", losses)}");
            Assert.NotEqual(baseIds, Generate());
            trained = Logits();
            dir = Save(t);
        }
        finally
        {
            Free(t);
        }
        Close(baseLogits, Logits(), "the base after temper_trainer_free (virtual tokens detached)");
        Assert.Equal(baseIds, Generate());

        var config = Config(dir);
        Assert.Equal(peftType, config["peft_type"]!.GetValue<string>());
        Assert.Equal(4, config["num_virtual_tokens"]!.GetValue<int>());
        Assert.Equal(["prompt_embeddings"], TensorNames(dir));
        Close(EngineLogits(dir), trained, "LanguageModel.Load with the saved folder vs the trainer's model");

        // Applied unmerged through temper_adapter_apply, removed, and never merged.
        nint a = LoadAdapter(dir);
        try
        {
            Assert.True(Apply(a) == 0, LastError());
            Close(trained, Logits(), $"{peftType} applied");
            Assert.True(Apply(a) == 0, LastError());   // replaces itself (one set of virtual tokens at a time)
            Close(trained, Logits(), $"{peftType} applied twice");
            Assert.Equal((int)TemperStatus.Busy, Init(Quick(), SftData, out _));
            Assert.Contains("an adapter is applied", LastError());
            Assert.Equal(0, Remove());
            Close(baseLogits, Logits(), $"{peftType} removed");
            Assert.Equal((int)TemperStatus.InvalidArgument, Merge(a));
            Assert.Equal($"temper_adapter_merge: {dir} is a {(prompt ? "prompt" : "prefix")}-tuning adapter: its virtual tokens go before the input and have no weights to merge into; apply it unmerged (temper_adapter_apply)", LastError());
            Close(baseLogits, Logits(), "the model after a refused merge");
        }
        finally
        {
            FreeAdapter(a);
        }

        // init_adapter continues the folder as it is: its tokens from the first step, a matching count accepted.
        var more = Quick(lr: 5e-2f);
        if (prompt) more.PromptTuningTokens = 4;
        nint c = Trainer(more, initAdapter: dir);
        try
        {
            Close(trained, Logits(), "continued before its first step");
            Assert.True(float.IsFinite(Step(c)));
            Assert.Equal(peftType, Config(Save(c))["peft_type"]!.GetValue<string>());
        }
        finally
        {
            Free(c);
        }

        // DPO of the virtual tokens: the reference is the model with them off, so step 0 is not log 2.
        var dpo = Quick();
        dpo.Method = (int)TemperTrainMethod.Dpo;
        if (prompt) dpo.PromptTuningTokens = 4;
        else dpo.PrefixTuningTokens = 4;
        nint d = Trainer(dpo, DpoData);
        try
        {
            float loss = Step(d);
            Assert.True(float.IsFinite(loss) && MathF.Abs(loss - MathF.Log(2)) > 1e-4f, $"DPO loss {loss}");
        }
        finally
        {
            Free(d);
        }
    }

    [Fact]
    public void Prompt_tuning_init_text_starts_from_the_texts_token_embeddings()
    {
        if (!Available) return;
        var o = Quick();
        o.PromptTuningTokens = 3;
        nint t = Trainer(o, initText: "the value");
        try
        {
            var config = Config(Save(t));
            Assert.Equal("TEXT", config["prompt_tuning_init"]!.GetValue<string>());
            Assert.Equal("the value", config["prompt_tuning_init_text"]!.GetValue<string>());
        }
        finally
        {
            Free(t);
        }
    }

    [Fact]
    public void A_030_sized_trainer_options_struct_is_taken_without_the_new_fields()
    {
        if (!Available) return;
        // A host built against 0.3.0's temper.h: struct_size 88, and what lies past its fields is not read.
        var o = Quick();
        o.StructSize = 88;
        o.UseDora = 1;
        o.PrefixTuningTokens = -7;
        o.PromptTuningTokens = 3;
        nint t = Trainer(o);
        try
        {
            Step(t);
            var config = Config(Save(t));
            Assert.Equal("LORA", config["peft_type"]!.GetValue<string>());
            Assert.False(config["use_dora"]!.GetValue<bool>());
        }
        finally
        {
            Free(t);
        }
        foreach (uint size in new uint[] { 84, 96, 104, 128 })
        {
            o.StructSize = size;
            Assert.Equal((int)TemperStatus.InvalidArgument, Init(o, SftData, out _));
            Assert.Equal($"temper_trainer_init: options->struct_size is {size}, not the {sizeof(TemperTrainerOptions)} bytes of libtemper {LibraryExports.Version}'s temper_trainer_options; the host was compiled against another temper.h (this library's is TEMPER_VERSION {LibraryExports.Version})", LastError());
        }
        Assert.Equal(120, sizeof(TemperTrainerOptions));   // 0.5.0 appended ia3 and modules_to_save to 0.4.0's 112
        Assert.Equal(84, (int)Marshal.OffsetOf<TemperTrainerOptions>(nameof(TemperTrainerOptions.UseDora)));
    }

    public static TheoryData<string, string> Refusals => new()
    {
        { "prompt=-1", "temper_trainer_init: prompt_tuning_tokens must be >= 0 (0 = off; got -1)" },
        { "prefix=-2", "temper_trainer_init: prefix_tuning_tokens must be >= 0 (0 = off; got -2)" },
        { "prompt=4 prefix=4", "temper_trainer_init: prompt_tuning_tokens and prefix_tuning_tokens are both set; train one kind of virtual tokens" },
        { "prompt=4 dora", "temper_trainer_init: prompt tuning trains only its virtual tokens; use_dora cannot be combined with it" },
        { "prefix=4 rslora", "temper_trainer_init: prefix tuning trains only its virtual tokens; use_rslora cannot be combined with it" },
        { "prompt=4 targets", "temper_trainer_init: prompt tuning trains only its virtual tokens; lora_targets cannot be combined with it" },
        { "prefix=4 text", "temper_trainer_init: prompt_tuning_init_text applies to prompt tuning; a prefix starts N(0,1) as PEFT's does" },
        { "text", "temper_trainer_init: prompt_tuning_init_text applies to prompt tuning; set prompt_tuning_tokens too" },
        { "prompt=4 empty-text", "temper_trainer_init: prompt_tuning_init_text is empty; set it to NULL for RANDOM init" },
        { "dora lora-adapter", $"temper_trainer_init: use_dora is set but init_adapter {LoraAdapterDir} is a plain LoRA adapter (use_dora false), and init_adapter continues it as it is; set use_dora = 0" },
        { "prompt=4 lora-adapter", $"temper_trainer_init: prompt_tuning_tokens is set but init_adapter {LoraAdapterDir} is a LoRA adapter, and init_adapter continues it as it is; set prompt_tuning_tokens = 0" },
        { "prefix=4 lora-adapter", $"temper_trainer_init: prefix_tuning_tokens is set but init_adapter {LoraAdapterDir} is a LoRA adapter, and init_adapter continues it as it is; set prefix_tuning_tokens = 0" },
        { "prompt=4 plus=4", "temper_trainer_init: prompt tuning trains only its virtual tokens; loraplus_lr_ratio cannot be combined with it" },
        { "plus=0", "temper_trainer_init: loraplus_lr_ratio must be > 0 (1 = off; got 0)" },
    };

    [Theory]
    [MemberData(nameof(Refusals))]
    public void Contradictory_trainer_options_are_refused_naming_the_field(string settings, string message)
    {
        if (!Available) return;
        var o = Quick();
        string? adapter = null, targets = null, text = null;
        foreach (var s in settings.Split(' '))
        {
            if (s.StartsWith("prompt=", StringComparison.Ordinal)) o.PromptTuningTokens = int.Parse(s[7..]);
            else if (s.StartsWith("prefix=", StringComparison.Ordinal)) o.PrefixTuningTokens = int.Parse(s[7..]);
            else if (s == "dora") o.UseDora = 1;
            else if (s == "rslora") o.UseRslora = 1;
            else if (s == "targets") targets = "q_proj";
            else if (s == "text") text = "the value";
            else if (s == "empty-text") text = "";
            else if (s == "lora-adapter") adapter = LoraAdapterDir;
            else if (s.StartsWith("plus=", StringComparison.Ordinal)) o.LoraplusLrRatio = float.Parse(s[5..], System.Globalization.CultureInfo.InvariantCulture);
            else throw new ArgumentException(s);
        }
        Assert.Equal((int)TemperStatus.InvalidArgument, Init(o, SftData, out var t, adapter, targets, text));
        Assert.Equal(0, t);
        Assert.Equal(message, LastError());
        // Nothing was left attached: a plain trainer starts on the base.
        nint plain = Trainer(Quick());
        Free(plain);
    }

    // LoRA+: a fresh adapter's first step moves every B entry with a clear gradient by learning_rate x ratio (AdamW's
    // first update is lr x sign(g)), so the saved B's largest entry is lr x ratio.
    [Theory]
    [InlineData(1f)]
    [InlineData(4f)]
    public void Loraplus_lr_ratio_scales_the_b_matrices_first_step(float ratio)
    {
        if (!Available) return;
        var o = Quick(lr: 1e-3f);
        o.LoraplusLrRatio = ratio;
        nint t = Trainer(o);
        string dir;
        try
        {
            Step(t);
            dir = Save(t);
        }
        finally
        {
            Free(t);
        }
        using var st = SafetensorsFile.Open(Path.Combine(dir, "adapter_model.safetensors"));
        float maxB = st.Entries.Where(e => e.Name.Contains(".lora_B.", StringComparison.Ordinal)).Max(e => st.Get(e.Name).ToFloatArray().Max(MathF.Abs));
        Assert.True(Math.Abs(maxB - 1e-3f * ratio) <= 1e-3f * 1e-3f * ratio, $"largest |B| after one step {maxB}, expected {1e-3f * ratio}");
    }

    [Fact]
    public void A_prompt_init_adapter_refuses_another_token_count_or_kind()
    {
        if (!Available) return;
        var o = Quick();
        o.PromptTuningTokens = 2;
        nint t = Trainer(o);
        string dir = Save(t);
        Free(t);
        o.PromptTuningTokens = 3;
        Assert.Equal((int)TemperStatus.InvalidArgument, Init(o, SftData, out _, dir));
        Assert.Equal($"temper_trainer_init: prompt_tuning_tokens is 3 but init_adapter {dir} has 2 virtual tokens, and init_adapter continues it as it is", LastError());
        o.PromptTuningTokens = 0;
        o.PrefixTuningTokens = 2;
        Assert.Equal((int)TemperStatus.InvalidArgument, Init(o, SftData, out _, dir));
        Assert.Equal($"temper_trainer_init: prefix_tuning_tokens is set but init_adapter {dir} is a prompt-tuning adapter, and init_adapter continues it as it is; set prefix_tuning_tokens = 0", LastError());
        o.PrefixTuningTokens = 0;
        Assert.Equal((int)TemperStatus.InvalidArgument, Init(o, SftData, out _, dir, initText: "the value"));
        Assert.StartsWith("temper_trainer_init: prompt_tuning_init_text initialises a fresh prompt", LastError());
        o.UseDora = 1;
        Assert.Equal((int)TemperStatus.InvalidArgument, Init(o, SftData, out _, dir));
        Assert.Equal("temper_trainer_init: prompt tuning trains only its virtual tokens; use_dora cannot be combined with it", LastError());
    }
}
