// PEFT's modules_to_save for a language model's embedding and LM head: full copies of model.embed_tokens
// ([V,C]) and/or lm_head ([V,C]) saved beside the LoRA as base_model.model.model.embed_tokens.weight and
// base_model.model.lm_head.weight (get_peft_model_state_dict drops ModulesToSaveWrapper's
// "modules_to_save.<adapter>." from the names). An entry names a module by its name or a suffix of it after
// a dot ("embed_tokens", "model.embed_tokens", "lm_head"). A copy stands in for the weight while attached
// (ModelWeights.EmbedReplacement, Projection.Replacement); the base stays untouched underneath.
// Tied embeddings (tie_word_embeddings): PEFT's ModulesToSaveWrapper deep-copies only the module it wraps, so
// with its default ensure_weight_tying=false the named module reads its own copy and the other keeps the
// shared base weight: the pair is untied. Temper does the same (both named: two copies, trained apart);
// ensure_weight_tying=true (PEFT keeps the copies tied) is refused where the config is read.
using Temper.Core;

namespace Temper.Models;

public static class ModulesToSave
{
    public const string EmbedModule = "model.embed_tokens", HeadModule = "lm_head";

    /// <summary>The model module (EmbedModule or HeadModule) a modules_to_save entry names, or null when it names neither.</summary>
    public static string? ModuleOf(string entry) =>
        new[] { EmbedModule, HeadModule }.FirstOrDefault(m => m == entry || m.EndsWith("." + entry, StringComparison.Ordinal));

    /// <summary>Whether two modules_to_save lists name the same modules (spelled either way, in any order).</summary>
    public static bool SameModules(IEnumerable<string> a, IEnumerable<string> b) =>
        a.Select(ModuleOf).Order().SequenceEqual(b.Select(ModuleOf).Order());

    /// <summary>
    /// Attaches copies [V,C] (host tensors, any float dtype; null = leave that one) in place of the embedding and LM
    /// head: f32 for training (trainable parameters must be f32), else in the dtype of the weight they replace.
    /// <paramref name="source"/> names where they came from in errors.
    /// </summary>
    public static void Attach(ModelWeights w, IBackend be, Tensor? embed, Tensor? head, bool f32, string source)
    {
        if (embed != null && w.EmbedReplacement != null || head != null && w.LmHead.Replacement != null)
            throw new TemperException($"{source}: the model already carries a modules_to_save copy of {(embed != null ? EmbedModule : HeadModule)}; attach one adapter with copies at a time");
        if (embed != null) Check(embed, w.BaseEmbed, EmbedModule, source);
        if (head != null) Check(head, w.LmHead.BaseWeight, HeadModule, source);
        if (embed != null) w.EmbedReplacement = be.FromHost(Copy(embed, f32 ? DType.F32 : w.BaseEmbed.DType, EmbedModule + ".weight"));
        if (head != null) w.LmHead.Replacement = be.FromHost(Copy(head, f32 ? DType.F32 : w.LmHead.BaseWeight.DType, HeadModule + ".weight"));
    }

    /// <summary>Fresh f32 copies of the base's current embedding and/or LM head, attached (a new modules_to_save run).</summary>
    public static void AttachFreshCopies(ModelWeights w, IBackend be, bool embed, bool head)
    {
        using var e = embed && !w.BaseEmbed.IsHost ? be.ToHost(w.BaseEmbed) : null;
        using var h = head && !w.LmHead.BaseWeight.IsHost ? be.ToHost(w.LmHead.BaseWeight) : null;
        Attach(w, be, embed ? e ?? w.BaseEmbed : null, head ? h ?? w.LmHead.BaseWeight : null, f32: true, "--modules-to-save");
    }

    private static void Check(Tensor copy, Tensor weight, string module, string source)
    {
        if (copy.Shape == weight.Shape) return;
        string why = copy.Shape.Rank == 2 && copy.Shape[1] == weight.Shape[1] && copy.Shape[0] != weight.Shape[0]
            ? "; a resized vocabulary is not supported (the base's tokenizer and embedding must be the ones the adapter was trained on)" : "";
        throw new TemperException($"{source}: tensor '{module}.weight' has shape {copy.Shape}, the model's is {weight.Shape}{why}");
    }

    // A new host tensor (never a view of an adapter file, which its loader closes) in the wanted dtype.
    private static Tensor Copy(Tensor t, DType dtype, string name) =>
        Tensor.FromFloatsAs(t.Shape, t.ToFloatArray(), dtype == DType.BF16 ? DType.BF16 : DType.F32, name);
}
