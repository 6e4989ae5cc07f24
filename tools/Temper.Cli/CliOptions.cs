// Options shared by several verbs, and the wrapper that turns bad input into a one-line error.
using System.CommandLine;
using System.Text.Json;
using Temper.Core;
using Temper.Kernels.Cpu;
using Temper.Kernels.Ilgpu;
using Temper.Models;

namespace Temper.Cli;

internal static class CliOptions
{
    public static readonly Option<bool> Verbose = new("--verbose") { Description = "Print stack traces with errors", Recursive = true };

    public static Option<string> Model() => new("--model", "-m") { Description = "Model folder (config.json, safetensors, tokenizer.json)", Required = true };
    public static Option<string?> Adapter() => new("--adapter") { Description = "PEFT LoRA adapter folder, applied unmerged" };
    public static Option<bool> QLora() => new("--qlora") { Description = "QLoRA: hold the layers' projections in NF4 (4-bit, quantised once and saved as temper-nf4.safetensors in the model folder)" };
    public static Option<int> Threads() => new("--threads") { Description = "CPU threads (0 = all cores)", DefaultValueFactory = _ => 0 };
    public static Option<string?> ChatTemplateKwargs() => new("--chat-template-kwargs") { Description = "JSON object of extra chat-template variables, e.g. '{\"enable_thinking\": false}' for Qwen3 (as llama.cpp's flag and vLLM's request field)" };

    public static Option<string?> ChatTemplate() => new("--chat-template") { Description = "A chat template replacing the model's: a Jinja file, or the template itself when no such file exists and it holds '{%' or '{{' (vLLM's flag)" };

    /// <summary>The model folder's chat template as --chat-template replaces it (null when the flag is not given); one that does not parse is refused.</summary>
    public static Temper.Models.Text.ChatTemplate? ChatTemplateOverride(ParseResult p, Option<string?> chatTemplate, Option<string> model) =>
        p.GetValue(chatTemplate) is string t ? Temper.Models.Text.ChatTemplate.LoadFromModelDir(p.GetValue(model)!, t) : null;

    /// <summary>The --chat-template-kwargs variables, parsed (null when not given).</summary>
    public static IReadOnlyDictionary<string, System.Text.Json.Nodes.JsonNode?>? TemplateKwargs(ParseResult p, Option<string?> kwargs) =>
        p.GetValue(kwargs) is string json ? Temper.Models.Text.ChatPromptOptions.ParseKwargs(json, "--chat-template-kwargs") : null;
    public static readonly Option<string?> Device = new("--device") { Description = "cpu, cuda, opencl or ilgpu-cpu (default: the best present)", Recursive = true };
    public static readonly Option<string?> Kernels = new("--kernels") { Description = "On CUDA: ilgpu (the ILGPU kernels), ptx (the CUDA C++ kernels where one exists: the bf16 and NF4 Linear with the LoRA product joined, NF4 dequantisation, attention forward and backward and the paged attention for head dims 64 and 128, RMSNorm, SwiGLU, RoPE and the AdamW step) or auto (ptx on an NVIDIA GPU of compute capability 8.0 or later, where they were measured faster; ilgpu elsewhere)", Recursive = true };
    public static Option<string> KvCacheDType() => new("--kv-cache-dtype")
    {
        Description = "What the KV cache holds: auto (the model's weight dtype, as vLLM's default: bf16 for a bf16 model), bfloat16 or float32 (vLLM's flag)",
        DefaultValueFactory = _ => "auto",
    };

    /// <summary>--kv-cache-dtype's value as ServingOptions.KvCacheDType (null: auto).</summary>
    public static DType? ParseKvCacheDType(string value) => value switch
    {
        "auto" => null,
        "bfloat16" or "bf16" => DType.BF16,
        "float32" or "f32" or "fp32" => DType.F32,
        _ => throw new TemperException($"--kv-cache-dtype must be auto, bfloat16 or float32, not '{value}'"),
    };

    public static readonly Option<string?> DTypeFlag = new("--dtype") { Description = "Weight/compute storage: f32 or bf16 (default: as stored)", Recursive = true };

    /// <summary>Runs a verb: TemperException, missing files and bad JSON become one line on stderr and exit 2.</summary>
    public static void SetGuardedAction(this Command cmd, Func<ParseResult, int> action) => cmd.SetAction(p => Guard(p, action));

    public static int Guard(ParseResult p, Func<ParseResult, int> action)
    {
        try
        {
            return action(p);
        }
        catch (Exception e) when (e is TemperException or FileNotFoundException or DirectoryNotFoundException or JsonException or UnauthorizedAccessException)
        {
            Console.Error.WriteLine($"temper: {e.Message}");
            if (p.GetValue(Verbose)) Console.Error.WriteLine(e);
            return 2;
        }
        catch (OperationCanceledException)
        {
            Console.Error.WriteLine("temper: cancelled");
            return 130;
        }
    }

    /// <summary>CUDA device 0 through Temper's driver bindings, or a one-line TemperException saying why not.</summary>
    public static Temper.Cuda.CudaDevice OpenCudaDevice(string what)
    {
        try
        {
            return Temper.Cuda.CudaDevice.Open();
        }
        catch (Exception e) when (e is Temper.Cuda.Driver.CudaException or DllNotFoundException)
        {
            throw new TemperException($"{what} on a CUDA GPU: {e.Message}");
        }
    }

    /// <summary>The backend --device names (default: CUDA through ILGPU when present, else the CPU).</summary>
    public static IBackend Backend(ParseResult p, int threads)
    {
        string device = p.GetValue(Device) ?? (IlgpuBackend.IsAvailable("cuda") ? "cuda" : "cpu");
        string kernels = p.GetValue(Kernels) ?? "auto";
        if (kernels is not ("auto" or "ilgpu" or "ptx")) throw new TemperException($"--kernels must be auto, ilgpu or ptx, not '{kernels}'");
        if (kernels == "ptx" && device != "cuda") throw new TemperException($"--kernels ptx runs CUDA C++ kernels: it needs --device cuda, not {device}");
        IBackend be = device switch
        {
            "cpu" => new CpuBackend(threads),
            "cuda" or "opencl" or "ilgpu-cpu" => IlgpuBackend.IsAvailable(device) ? IlgpuBackend.Create(device) : throw new TemperException($"--device {device}: no such device on this machine"),
            _ => throw new TemperException($"--device must be cpu, cuda, opencl or ilgpu-cpu, not '{device}'"),
        };
        if (be is IlgpuBackend ilgpu && (kernels != "auto" || ilgpu.PtxKernelsPreferred)) ilgpu.PtxKernels = kernels != "ilgpu";
        return be;
    }

    public static DType? WeightDType(ParseResult p) => p.GetValue(DTypeFlag) switch
    {
        null => null,
        "f32" => DType.F32,
        "bf16" => DType.BF16,
        var s => throw new TemperException($"--dtype must be f32 or bf16, not '{s}'"),
    };

    public static LanguageModel LoadModel(ParseResult p, Option<string> model, Option<string?>? adapter, Option<int> threads, Option<bool>? qlora = null) =>
        LanguageModel.Load(p.GetValue(model)!, Backend(p, p.GetValue(threads)), adapter == null ? null : p.GetValue(adapter), weightDType: WeightDType(p),
            qlora: qlora != null && p.GetValue(qlora));
}
