// Python's round(x, ndigits) for the round filter: the exact binary value of the float rounded half to
// even at the decimal digit asked for (round(2.675, 2) is 2.67, round(0.125, 2) is 0.12), then read
// back as the nearest float; for ints, round(15, -1) is 20. Math.Round scales by 10^n first and so
// misses by one unit now and then (round(964.15, 1)).
using System.Globalization;
using System.Numerics;

namespace Temper.Models.Text;

internal static class PythonRound
{
    public static double Float(double x, long ndigits)
    {
        if (!double.IsFinite(x) || x == 0 || ndigits > 323) return x;
        if (ndigits < -308) return 0.0 * Math.Sign(x);
        // x = mantissa * 2^exponent exactly; the rounded value is q * 10^-ndigits.
        var bits = BitConverter.DoubleToInt64Bits(Math.Abs(x));
        var exponent = (int)((bits >> 52) & 0x7FF);
        var mantissa = new BigInteger(bits & 0xFFFFFFFFFFFFFL);
        if (exponent == 0) exponent = 1; else mantissa += BigInteger.One << 52;
        exponent -= 1075;
        var numerator = mantissa * (exponent > 0 ? BigInteger.One << exponent : BigInteger.One);
        var denominator = exponent < 0 ? BigInteger.One << -exponent : BigInteger.One;
        if (ndigits >= 0) numerator *= BigInteger.Pow(10, (int)ndigits);
        else denominator *= BigInteger.Pow(10, (int)-ndigits);
        var q = BigInteger.DivRem(numerator, denominator, out var r);
        var twice = r * 2;
        if (twice > denominator || (twice == denominator && !q.IsEven)) q += 1;
        var text = q.ToString(CultureInfo.InvariantCulture) + "E" + (-ndigits).ToString(CultureInfo.InvariantCulture);
        var rounded = double.Parse(text, NumberStyles.Float, CultureInfo.InvariantCulture);
        return x < 0 ? -rounded : rounded;
    }

    public static long Int(long x, long ndigits)
    {
        if (ndigits >= 0) return x;
        if (ndigits < -18) return 0;
        var unit = (long)Math.Pow(10, -ndigits);
        var q = Math.DivRem(Math.Abs(x), unit, out var r);
        if (r * 2 > unit || (r * 2 == unit && q % 2 == 1)) q++;
        return x < 0 ? -q * unit : q * unit;
    }
}
