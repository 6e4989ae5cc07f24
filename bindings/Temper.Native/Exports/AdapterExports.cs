// temper_adapter_*: PEFT adapters: LoRA (DoRA and modules_to_save too), IA3, PROMPT_TUNING and PREFIX_TUNING. load/free
// own the adapter read from a folder; apply attaches it to a model unmerged (replacing whatever adapter was applied: LoRA
// or IA3 views and a LoRA's modules_to_save copies of embed_tokens / lm_head, or a prompt's / prefix's virtual tokens
// through LanguageModel.AttachPrompt / AttachPrefix), remove detaches it (the copies too), merge folds a LoRA, DoRA or
// IA3 adapter into the model's weights (modules_to_save copies then stand in for the weights for good; virtual tokens
// have no weights to fold into and are refused). Applied adapters are copies, so the adapter handle may be freed right after.
using System.Runtime.InteropServices;

namespace Temper.Native.Exports;

public static unsafe class AdapterExports
{
    [UnmanagedCallersOnly(EntryPoint = "temper_adapter_load")]
    public static int AdapterLoad(byte* dir, nint* adapter)
    {
        LastError.Clear();
        try
        {
            if (adapter == null) throw Status.Arg("temper_adapter_load: out (temper_adapter**) is NULL");
            *adapter = 0;
            string path = Utf8.Read(dir, "temper_adapter_load: dir");
            if (!Directory.Exists(path)) throw new NativeError(TemperStatus.NotFound, $"{path}: adapter folder not found");
            foreach (var f in new[] { "adapter_config.json", "adapter_model.safetensors" })
                if (!File.Exists(Path.Combine(path, f))) throw new NativeError(TemperStatus.NotFound, $"{path}: no {f} in the adapter folder");
            *adapter = Handles.Create(NativeAdapter.Load(path));
            return 0;
        }
        catch (Exception e) { return Status.Report(e); }
    }

    [UnmanagedCallersOnly(EntryPoint = "temper_adapter_free")]
    public static int AdapterFree(nint adapter)
    {
        LastError.Clear();
        try
        {
            if (adapter == 0) return 0;
            var a = Handles.Get<NativeAdapter>(adapter, "adapter");
            if (!Handles.Free(adapter)) throw new NativeError(TemperStatus.InvalidHandle, "temper_adapter_free: the adapter was already freed");
            a.Dispose();
            return 0;
        }
        catch (Exception e) { return Status.Report(e); }
    }

    [UnmanagedCallersOnly(EntryPoint = "temper_adapter_apply")]
    public static int AdapterApply(nint model, nint adapter)
    {
        LastError.Clear();
        try
        {
            var m = Handles.Get<NativeModel>(model, "model");
            var a = Handles.Get<NativeAdapter>(adapter, "adapter");
            using var lease = m.Enter("temper_adapter_apply");
            RefuseDuringTraining(m, "temper_adapter_apply");
            a.Apply(m);
            return 0;
        }
        catch (Exception e) { return Status.Report(e); }
    }

    [UnmanagedCallersOnly(EntryPoint = "temper_adapter_remove")]
    public static int AdapterRemove(nint model)
    {
        LastError.Clear();
        try
        {
            var m = Handles.Get<NativeModel>(model, "model");
            using var lease = m.Enter("temper_adapter_remove");
            RefuseDuringTraining(m, "temper_adapter_remove");
            m.RemoveAdapters();
            return 0;
        }
        catch (Exception e) { return Status.Report(e); }
    }

    [UnmanagedCallersOnly(EntryPoint = "temper_adapter_merge")]
    public static int AdapterMerge(nint model, nint adapter)
    {
        LastError.Clear();
        try
        {
            var m = Handles.Get<NativeModel>(model, "model");
            var a = Handles.Get<NativeAdapter>(adapter, "adapter");
            using var lease = m.Enter("temper_adapter_merge");
            RefuseDuringTraining(m, "temper_adapter_merge");
            if (a.Lora == null && a.Ia3 == null)
                throw Status.Arg($"temper_adapter_merge: {a.Directory} is a {a.Kind} adapter: its virtual tokens go before the input and have no weights to merge into; apply it unmerged (temper_adapter_apply)");
            m.RemoveAdapters();
            // IA3 as PEFT merges it (rows or columns of W scaled); a LoRA's modules_to_save copies stay in place of the weights.
            if (a.Ia3 != null) a.Ia3.Merge(m.Lm.Weights, m.Backend);
            else a.Lora!.Merge(m.Lm.Weights, m.Backend);
            m.InvalidateGraph(); // the device copy of the weights predates the merge
            return 0;
        }
        catch (Exception e) { return Status.Report(e); }
    }

    private static void RefuseDuringTraining(NativeModel m, string call)
    {
        if (m.Trainer != null)
            throw new NativeError(TemperStatus.Busy, $"{call}: a trainer owns this model's adapter while it lives; save its adapter and free it first (temper_trainer_free)");
    }
}
