// The error type of Temper.Cuda: a TemperException whose one-line message names the failed driver call,
// the CUresult's CUDA name and the driver's description, e.g.
//   "cuMemAlloc_v2 failed: CUDA_ERROR_OUT_OF_MEMORY (out of memory)".
// CudaCheck.Ok is the single helper every driver call goes through.
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Text;
using Temper.Core;

namespace Temper.Cuda.Driver;

public sealed class CudaException : TemperException
{
    public CudaException(string message) : base(message) { }
    public CudaException(string message, CudaResult result) : base(message) => Result = result;
    public CudaException() { }
    public CudaException(string message, Exception inner) : base(message, inner) { }
    public CudaException(string message, CudaResult result, Exception inner) : base(message, inner) => Result = result;

    /// <summary>The driver's status, or Success when the error is not a driver status (e.g. no library).</summary>
    public CudaResult Result { get; }
}

public static class CudaCheck
{
    /// <summary>Throws a CudaException naming <paramref name="call"/> unless <paramref name="result"/> is Success.</summary>
    public static void Ok(CudaResult result, [CallerArgumentExpression(nameof(result))] string call = "")
    {
        if (result != CudaResult.Success) throw new CudaException(Message(result, call), result);
    }

    /// <summary>"cuX failed: CUDA_ERROR_NAME (description)"; the call expression is cut to the function name.</summary>
    public static string Message(CudaResult result, string call)
    {
        int paren = call.IndexOf('(', StringComparison.Ordinal);
        string name = paren > 0 ? call[..paren] : call;
        int dot = name.LastIndexOf('.');
        if (dot >= 0) name = name[(dot + 1)..];
        string? text = DriverString(result);
        return text is null ? $"{name} failed: {CudaErrors.Name(result)}" : $"{name} failed: {CudaErrors.Name(result)} ({text})";
    }

    static unsafe string? DriverString(CudaResult result)
    {
        if (!CudaLibrary.IsAvailable) return null;
        byte* text = null;
        return CudaImports.cuGetErrorString(result, &text) == CudaResult.Success && text != null
            ? Marshal.PtrToStringUTF8((nint)text) : null;
    }
}

public static class CudaErrors
{
    /// <summary>The CUDA name of a CUresult ("CUDA_ERROR_INVALID_PTX"): the driver's cuGetErrorName when the
    /// library is loaded, else built from the enum member; unknown values read "CUDA_ERROR_&lt;value&gt;".</summary>
    public static unsafe string Name(CudaResult result)
    {
        if (CudaLibrary.IsAvailable)
        {
            byte* name = null;
            if (CudaImports.cuGetErrorName(result, &name) == CudaResult.Success && name != null)
                return Marshal.PtrToStringUTF8((nint)name)!;
        }
        return ManagedName(result);
    }

    /// <summary>The name built from the enum alone, without asking the driver.</summary>
    public static string ManagedName(CudaResult result)
    {
        if (result == CudaResult.Success) return "CUDA_SUCCESS";
        if (!Enum.IsDefined(result)) return $"CUDA_ERROR_{(int)result}";
        string member = result.ToString();
        var name = new StringBuilder("CUDA_ERROR_", 48);
        for (int i = 0; i < member.Length; i++)
        {
            if (i > 0 && char.IsUpper(member[i])) name.Append('_');
            name.Append(char.ToUpperInvariant(member[i]));
        }
        return name.ToString();
    }
}
