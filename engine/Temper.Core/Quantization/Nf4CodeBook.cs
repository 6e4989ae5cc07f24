// The 4-bit NormalFloat (NF4) code book of QLoRA, as bitsandbytes defines it: 16 f32 values in
// [-1, 1], index 7 is exactly 0, index 0 is -1 and index 15 is +1 (the values of bitsandbytes'
// csrc/kernels.cu nf4_dequantization_lut, which functional.get_4bit_type("nf4") also returns).
// Quantize is bitsandbytes' dQuantizeNF4 decision tree: each threshold is the midpoint of two
// neighbouring code values, compared with '>' so a value exactly on a threshold takes the lower code,
// and a NaN (an all-zero block: 0 * (1/0)) falls through every test to code 0.
namespace Temper.Core.Quantization;

public static class Nf4CodeBook
{
    /// <summary>The 16 code values, index = 4-bit code.</summary>
    public static ReadOnlySpan<float> Values =>
    [
        -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
        -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
        0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f, 0.33791524171829224f,
        0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f,
    ];

    /// <summary>The code of x (x is w / absmax, nominally in [-1, 1]).</summary>
    public static byte Quantize(float x)
    {
        if (x > 0.03979014977812767f)
        {
            if (x > 0.3893125355243683f)
            {
                if (x > 0.6427869200706482f) return x > 0.8614784181118011f ? (byte)15 : (byte)14;
                return x > 0.5016634166240692f ? (byte)13 : (byte)12;
            }
            if (x > 0.2035212516784668f) return x > 0.2920137718319893f ? (byte)11 : (byte)10;
            return x > 0.1202552504837513f ? (byte)9 : (byte)8;
        }
        if (x > -0.33967943489551544f)
        {
            if (x > -0.13791173323988914f) return x > -0.045525018125772476f ? (byte)7 : (byte)6;
            return x > -0.23460740596055984f ? (byte)5 : (byte)4;
        }
        if (x > -0.6106329262256622f) return x > -0.4599952697753906f ? (byte)3 : (byte)2;
        return x > -0.8480964004993439f ? (byte)1 : (byte)0;
    }
}
