// temper_adapter_*: PEFT LoRA adapters. load/free own the adapter read from a folder; apply attaches it
// to a model unmerged (replacing whatever adapter was applied), remove detaches it, merge folds it
// into the model's weights. Applied views are copies, so the adapter handle may be freed right after.
using System.Runtime.InteropServices;
using Temper.Models;

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
            *adapter = Handles.Create(new NativeAdapter(LoraAdapter.Load(path)));
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
            m.RemoveLora();
            try
            {
                a.Adapter.Apply(m.Lm.Weights, m.Backend);
                m.OwnLoraCopies();
            }
            catch
            {
                m.RemoveLora();
                throw;
            }
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
            m.RemoveLora();
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
            m.RemoveLora();
            a.Adapter.Merge(m.Lm.Weights, m.Backend);
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
