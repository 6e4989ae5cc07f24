// temper_model_*: load/free, vocabulary size, tokenize/detokenize, chat template rendering and logits.
// Every export clears the thread's last error, catches every exception and returns a status (or a
// size, negative on error); see temper.h for each function's contract and thread-safety.
using System.Runtime.InteropServices;
using System.Text.Json;
using System.Text.Json.Nodes;
using Temper.Core;
using Temper.Cuda;
using Temper.Cuda.Driver;
using Temper.Kernels.Cpu;
using Temper.Models;
using Temper.Models.Text;

namespace Temper.Native.Exports;

public static unsafe class ModelExports
{
    [UnmanagedCallersOnly(EntryPoint = "temper_model_options_default")]
    public static TemperModelOptions ModelOptionsDefault() => Defaults;

    internal static TemperModelOptions Defaults => new() { StructSize = (uint)sizeof(TemperModelOptions), Device = (int)TemperDevice.Cpu, Threads = 0 };

    [UnmanagedCallersOnly(EntryPoint = "temper_model_load")]
    public static int ModelLoad(byte* dir, TemperModelOptions* options, nint* model)
    {
        LastError.Clear();
        try
        {
            if (model == null) throw Status.Arg("temper_model_load: out (temper_model**) is NULL");
            *model = 0;
            string path = Utf8.Read(dir, "temper_model_load: dir");
            var o = OptionStructs.Read(options, Defaults, "temper_model_load", "temper_model_options");
            if (o.Device != (int)TemperDevice.Cpu && o.Device != (int)TemperDevice.Cuda) throw Status.Arg($"temper_model_load: unknown device {o.Device}");
            if (o.Threads < 0) throw Status.Arg($"temper_model_load: threads must be >= 0 (got {o.Threads})");
            if (!Directory.Exists(path)) throw new NativeError(TemperStatus.NotFound, $"{path}: model folder not found");
            if (!File.Exists(Path.Combine(path, "config.json"))) throw new NativeError(TemperStatus.NotFound, $"{path}: no config.json in the model folder");
            var be = new CpuBackend(o.Threads);
            if (o.Device == (int)TemperDevice.Cuda)
            {
                *model = Handles.Create(LoadForCuda(path, be));
                return 0;
            }
            var lm = LanguageModel.Load(path, be);
            *model = Handles.Create(new NativeModel(lm, be));
            return 0;
        }
        catch (Exception e) { return Status.Report(e); }
    }

    // TEMPER_DEVICE_CUDA: the model's shape checked against the decode graph's kernels first, then the
    // weights as bf16 on the CPU and the device opened; no device or an unsupported shape is TEMPER_E_UNSUPPORTED.
    private static NativeModel LoadForCuda(string path, CpuBackend be)
    {
        try
        {
            GraphDecoding.Validate(ModelConfig.Load(path), rows: 1, capacity: 2);
        }
        catch (TemperException e)
        {
            throw new NativeError(TemperStatus.Unsupported, $"temper_model_load: {path}: {e.Message}");
        }
        CudaDevice device;
        try
        {
            device = CudaDevice.Open();
        }
        catch (Exception e) when (e is CudaException or DllNotFoundException)
        {
            throw new NativeError(TemperStatus.Unsupported, $"temper_model_load: no CUDA device: {e.Message}");
        }
        try
        {
            return new NativeModel(LanguageModel.Load(path, be, weightDType: DType.BF16), be, device);
        }
        catch
        {
            device.Dispose();
            throw;
        }
    }

    [UnmanagedCallersOnly(EntryPoint = "temper_model_free")]
    public static int ModelFree(nint model)
    {
        LastError.Clear();
        try
        {
            if (model == 0) return 0;
            var m = Handles.Get<NativeModel>(model, "model");
            using (m.Enter("temper_model_free"))
            {
                if (m.Trainer != null) throw new NativeError(TemperStatus.Busy, "temper_model_free: a trainer is still attached to this model; free it first (temper_trainer_free)");
                if (!Handles.Free(model)) throw new NativeError(TemperStatus.InvalidHandle, "temper_model_free: the model was already freed");
                m.Dispose();
            }
            return 0;
        }
        catch (Exception e) { return Status.Report(e); }
    }

    [UnmanagedCallersOnly(EntryPoint = "temper_model_vocab_size")]
    public static int ModelVocabSize(nint model)
    {
        LastError.Clear();
        try
        {
            return Handles.Get<NativeModel>(model, "model").Lm.Config.VocabSize;
        }
        catch (Exception e) { return Status.Report(e); }
    }

    [UnmanagedCallersOnly(EntryPoint = "temper_model_tokenize")]
    public static int ModelTokenize(nint model, byte* text, int* ids, int capacity)
    {
        LastError.Clear();
        try
        {
            var tok = Handles.Get<NativeModel>(model, "model").Lm.RequireTokenizer();
            string s = Utf8.Read(text, "temper_model_tokenize: text");
            CheckBuffer(ids, capacity, "temper_model_tokenize: ids");
            var r = tok.Encode(s);
            if (r.Count <= capacity)
                for (int i = 0; i < r.Count; i++) ids[i] = r[i];
            return r.Count;
        }
        catch (Exception e) { return Status.Report(e); }
    }

    [UnmanagedCallersOnly(EntryPoint = "temper_model_detokenize")]
    public static int ModelDetokenize(nint model, int* ids, int count, int skipSpecial, byte* text, int capacity)
    {
        LastError.Clear();
        try
        {
            var m = Handles.Get<NativeModel>(model, "model");
            var tok = m.Lm.RequireTokenizer();
            var list = ReadIds(ids, count, m.Lm.Config.VocabSize, "temper_model_detokenize: ids");
            return Utf8.Write(tok.Decode(list, skipSpecial != 0), text, capacity, "temper_model_detokenize: text");
        }
        catch (Exception e) { return Status.Report(e); }
    }

    [UnmanagedCallersOnly(EntryPoint = "temper_model_chat_render")]
    public static int ModelChatRender(nint model, byte* messagesJson, int addGenerationPrompt, byte* text, int capacity) =>
        ChatRender("temper_model_chat_render", model, messagesJson, addGenerationPrompt, null, text, capacity);

    [UnmanagedCallersOnly(EntryPoint = "temper_model_chat_render_vars")]
    public static int ModelChatRenderVars(nint model, byte* messagesJson, int addGenerationPrompt, byte* templateKwargsJson, byte* text, int capacity) =>
        ChatRender("temper_model_chat_render_vars", model, messagesJson, addGenerationPrompt, templateKwargsJson, text, capacity);

    // Both chat renders: messages_json a JSON array; template_kwargs_json (NULL = none) a JSON object of template variables.
    private static int ChatRender(string fn, nint model, byte* messagesJson, int addGenerationPrompt, byte* templateKwargsJson, byte* text, int capacity)
    {
        LastError.Clear();
        try
        {
            var template = Handles.Get<NativeModel>(model, "model").Lm.RequireTemplate();
            string json = Utf8.Read(messagesJson, $"{fn}: messages_json");
            JsonArray messages;
            try
            {
                messages = JsonNode.Parse(json) as JsonArray
                    ?? throw Status.Arg($"{fn}: messages_json must be a JSON array of {{\"role\", \"content\"}} objects");
            }
            catch (JsonException e)
            {
                throw Status.Arg($"{fn}: messages_json is not valid JSON: {e.Message}");
            }
            IReadOnlyDictionary<string, JsonNode?>? kwargs = null;
            if (templateKwargsJson != null)
            {
                try
                {
                    kwargs = ChatPromptOptions.ParseKwargs(Utf8.Read(templateKwargsJson, $"{fn}: template_kwargs_json"), $"{fn}: template_kwargs_json");
                }
                catch (TemperException e)
                {
                    throw Status.Arg(e.Message);
                }
            }
            var o = new ChatPromptOptions { AddGenerationPrompt = addGenerationPrompt != 0, TemplateKwargs = kwargs };
            return Utf8.Write(ChatPrompt.Render(template, messages, o), text, capacity, $"{fn}: text");
        }
        catch (Exception e) { return Status.Report(e); }
    }

    [UnmanagedCallersOnly(EntryPoint = "temper_model_logits")]
    public static int ModelLogits(nint model, int* ids, int* mask, int batch, int seq, float* logits, nuint capacity)
    {
        LastError.Clear();
        try
        {
            var m = Handles.Get<NativeModel>(model, "model");
            if (batch < 1 || seq < 1) throw Status.Arg($"temper_model_logits: batch ({batch}) and seq ({seq}) must be >= 1");
            int v = m.Lm.Config.VocabSize;
            long n = (long)batch * seq;
            if (n > int.MaxValue / v) throw Status.Arg($"temper_model_logits: [{batch},{seq},{v}] logits are too many for one call");
            var idArray = ReadIds(ids, (int)n, v, "temper_model_logits: ids");
            int[]? maskArray = null;
            if (mask != null)
            {
                maskArray = new ReadOnlySpan<int>(mask, (int)n).ToArray();
                for (int i = 0; i < maskArray.Length; i++)
                    if (maskArray[i] is not (0 or 1)) throw Status.Arg($"temper_model_logits: mask[{i}] is {maskArray[i]}, not 0 or 1");
            }
            if (logits == null) throw Status.Arg("temper_model_logits: logits is NULL");
            if (capacity < (nuint)(n * v))
                throw new NativeError(TemperStatus.BufferTooSmall, $"temper_model_logits: logits holds {capacity} floats, batch*seq*vocab_size = {n * v} are needed");
            using var lease = m.Enter("temper_model_logits");
            using var result = m.Lm.Logits(idArray, batch, maskArray);
            using var host = result.IsHost ? null : m.Backend.ToHost(result);
            (host ?? result).Floats.CopyTo(new Span<float>(logits, (int)(n * v)));
            return 0;
        }
        catch (Exception e) { return Status.Report(e); }
    }

    internal static void CheckBuffer(int* p, int capacity, string what)
    {
        if (capacity < 0) throw Status.Arg($"{what} capacity is negative ({capacity})");
        if (p == null && capacity > 0) throw Status.Arg($"{what} is NULL but its capacity is {capacity}");
    }

    /// <summary>Copies count ids from C, each checked to lie in [0, vocab).</summary>
    internal static int[] ReadIds(int* ids, int count, int vocab, string what)
    {
        if (count < 0) throw Status.Arg($"{what}: count is negative ({count})");
        if (count == 0) return [];
        if (ids == null) throw Status.Arg($"{what} is NULL");
        var a = new ReadOnlySpan<int>(ids, count).ToArray();
        for (int i = 0; i < a.Length; i++)
            if ((uint)a[i] >= (uint)vocab) throw Status.Arg($"{what}[{i}] = {a[i]} is outside [0, {vocab})");
        return a;
    }
}
