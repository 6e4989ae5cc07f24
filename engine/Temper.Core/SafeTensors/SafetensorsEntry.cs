// One tensor's line in a safetensors header: its name, dtype, shape and its byte range
// [Begin, End) relative to the start of the data section (the byte after the 8-byte length and the
// header JSON). Offsets are long: a file may be far larger than 2 GiB even when each tensor is not.
namespace Temper.Core.SafeTensors;

public sealed record SafetensorsEntry(string Name, DType DType, Shape Shape, long Begin, long End)
{
    public long ByteLength => End - Begin;
}
