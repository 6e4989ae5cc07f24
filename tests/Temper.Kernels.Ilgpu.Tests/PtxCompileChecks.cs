// Every kernel of the ILGPU backend compiled to PTX (sm_90, the H100's, PTX ISA 8.0) with ILGPU's
// PTX backend, without a GPU: catches what the CPU accelerator cannot, a kernel that uses something
// ILGPU cannot lower for CUDA (a managed call, an unmapped math function). Running the PTX is the
// CUDA op-check's job, on the GPU machine (TEMPER_PTX_DUMP=DIR writes the PTX there). The kernels are
// found by reflection (static methods named *Kernel: implicitly grouped when the first parameter is the
// Index1D, explicitly grouped otherwise), so a new op file cannot be forgotten. Generic kernels are
// instantiated with each weight type (the A operand of the two-operand GEMM is f32), or with each head
// dim (attention).
using System.Reflection;
using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Backends.EntryPoints;
using ILGPU.Backends.PTX;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;

namespace Temper.Kernels.Ilgpu.Tests;

public class PtxCompileChecks
{
    public static IEnumerable<MethodInfo> Kernels()
    {
        var asm = typeof(IlgpuBackend).Assembly;
        var weightTypes = new[] { asm.GetType("Temper.Kernels.Ilgpu.Ops.F32Weights", true)!, asm.GetType("Temper.Kernels.Ilgpu.Ops.Bf16Weights", true)!, asm.GetType("Temper.Kernels.Ilgpu.Ops.Nf4Weights", true)! };
        // A type parameter's instances: the weight types that meet its interfaces, else every struct of the ops that does (the head dims).
        var structs = asm.GetTypes().Where(t => t.Namespace == "Temper.Kernels.Ilgpu.Ops" && t.IsValueType).ToList();
        Type[] Meeting(Type p)
        {
            var needs = p.GetGenericParameterConstraints().Where(c => c.IsInterface).ToList();
            bool Meets(Type t) => needs.All(c => c.IsAssignableFrom(t));
            var weights = weightTypes.Where(Meets).ToArray();
            return weights.Length > 0 ? weights : [.. structs.Where(t => needs.Count > 0 && Meets(t))];
        }
        foreach (var t in asm.GetTypes().Where(t => t.Namespace == "Temper.Kernels.Ilgpu.Ops"))
            foreach (var m in t.GetMethods(BindingFlags.Static | BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.DeclaredOnly))
            {
                if (!m.Name.EndsWith("Kernel", StringComparison.Ordinal)) continue;
                if (!m.IsGenericMethodDefinition) yield return m;
                else if (m.GetGenericArguments().Length == 1)
                    foreach (var w in Meeting(m.GetGenericArguments()[0])) yield return m.MakeGenericMethod(w);
                else
                    foreach (var w in weightTypes) yield return m.MakeGenericMethod(weightTypes[0], w);
            }
    }

    public static TheoryData<string> KernelNames => [.. Kernels().Select(Name)];

    private static string Name(MethodInfo m) => m.DeclaringType!.Name + "." + m.Name + (m.IsGenericMethod ? "<" + string.Join(",", m.GetGenericArguments().Select(a => a.Name)) + ">" : "");

    [Fact]
    public void Every_op_file_has_kernels()
    {
        var names = Kernels().Select(Name).ToList();
        foreach (var op in new[] { "Add", "AdamW", "Attention", "Dropout", "Embedding", "Gemm", "Linear", "LmHeadCrossEntropy", "LmHeadDistillation", "LogSoftmax", "RmsNorm", "Rope", "Scale", "ScaleRows", "SumOfSquares", "SwiGlu", "Nf4", "PagedAttention", "GatheredLoraLinear" })
            Assert.Contains(names, n => n.StartsWith(op + ".", StringComparison.Ordinal));
    }

    [Theory, MemberData(nameof(KernelNames))]
    public void Kernel_compiles_to_ptx(string name)
    {
        var method = Kernels().Single(m => Name(m) == name);
        using var ctx = Context.Create(b => b.Math(MathMode.Default).EnableAlgorithms());
        using var backend = new PTXBackend(ctx, new CudaCapabilityContext(CudaArchitecture.SM_90), CudaArchitecture.SM_90, new CudaInstructionSet(8, 0), null);
        var entry = method.GetParameters()[0].ParameterType == typeof(Index1D)
            ? EntryPointDescription.FromImplicitlyGroupedKernel(method)
            : EntryPointDescription.FromExplicitlyGroupedKernel(method);
        var compiled = (PTXCompiledKernel)backend.Compile(entry, KernelSpecialization.Empty);
        Assert.Contains(".entry", compiled.PTXAssembly, StringComparison.Ordinal);
        // TEMPER_PTX_DUMP=DIR keeps the PTX for reading.
        if (Environment.GetEnvironmentVariable("TEMPER_PTX_DUMP") is { Length: > 0 } dir)
            File.WriteAllText(Path.Combine(dir, name.Replace('<', '_').Replace('>', '_').Replace(',', '_') + ".ptx"), compiled.PTXAssembly);
    }
}
