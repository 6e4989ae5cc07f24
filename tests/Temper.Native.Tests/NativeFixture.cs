// The llama-tiny fixture as the C-ABI tests load it, through temper_model_load with one thread (success asserted with
// the library's last error) and given back through temper_model_free; the fixed Prompt's token ids; and the two thin
// helpers every such call needs: the last error as a string and a NUL-terminated UTF-8 string.
using System.Runtime.InteropServices;
using System.Text;
using Temper.Native;
using Temper.Native.Exports;

namespace Temper.Tests;

public static unsafe class NativeFixture
{
    public static readonly string ModelDir = Fixtures.Hf("llama-tiny");

    // "Return the absolute value of the argument." in the fixture's tokenizer.
    public static readonly int[] Prompt = [508, 267, 263, 68, 85, 81, 78, 87, 270, 452, 511, 320, 267, 408, 16];

    /// <summary>temper_model_load of the fixture with Threads = 1.</summary>
    public static nint LoadModel()
    {
        var o = ModelExports.Defaults;
        o.Threads = 1;
        nint m;
        fixed (byte* dir = Utf8Z(ModelDir))
            Assert.True(((delegate* unmanaged<byte*, TemperModelOptions*, nint*, int>)&ModelExports.ModelLoad)(dir, &o, &m) == 0, LastError());
        return m;
    }

    /// <summary>temper_model_free, asserting success.</summary>
    public static void FreeModel(nint model) => Assert.Equal(0, ((delegate* unmanaged<nint, int>)&ModelExports.ModelFree)(model));

    public static string LastError() => Marshal.PtrToStringUTF8((nint)((delegate* unmanaged<byte*>)&LibraryExports.TemperLastError)())!;

    public static byte[] Utf8Z(string s) => Encoding.UTF8.GetBytes(s + "\0");
}
