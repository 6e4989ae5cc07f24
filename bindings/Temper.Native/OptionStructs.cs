// Reading an option struct a host passes by pointer (temper_model_options, temper_generate_options,
// temper_trainer_options). Each opens with uint32_t struct_size, set by its *_default() to the size the
// host's temper.h gives it; the library reads those 4 bytes first and the rest only when the size is one
// it knows, so a host built against another temper.h gets TEMPER_E_INVALID_ARGUMENT naming the struct,
// never a read past its struct. Fields are only ever appended; when a later version appends one, the
// size this version ships becomes an older size a reader may accept by copying that version's fields over the
// defaults (not its tail padding, which a host need not have zeroed). 0.3.0 appended json_object and
// json_schema to temper_generate_options and accepts that struct at 0.2.0's size too.
using Temper.Native.Exports;

namespace Temper.Native;

internal static unsafe class OptionStructs
{
    /// <summary>*options, or the defaults for NULL; a struct_size other than sizeof(T) or an older version's size
    /// (<paramref name="older"/>: (its struct_size, the bytes of its fields)) is refused.</summary>
    public static T Read<T>(T* options, T defaults, string function, string cName, params (uint Size, int Fields)[] older) where T : unmanaged
    {
        if (options == null) return defaults;
        uint size = *(uint*)options;
        foreach (var (oldSize, fields) in older)
            if (size == oldSize)
            {
                var r = defaults;
                Buffer.MemoryCopy(options, &r, sizeof(T), fields);
                return r;
            }
        if (size != (uint)sizeof(T))
            throw Status.Arg($"{function}: options->struct_size is {size}, not the {sizeof(T)} bytes of libtemper {LibraryExports.Version}'s {cName}"
                + (size == 0 ? $" (start from {cName}_default(), not {{0}} or memset)" : $"; the host was compiled against another temper.h (this library's is TEMPER_VERSION {LibraryExports.Version})"));
        return *options;
    }
}
