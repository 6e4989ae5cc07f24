// CheckMessage: an argument check's message is built only when the check fails, and then in full.
using System.Runtime.CompilerServices;
using Temper.Core;

namespace Temper.Tests;

public class CheckMessageTests
{
    private static string? Check(bool ok, [InterpolatedStringHandlerArgument(nameof(ok))] ref CheckMessage message) =>
        ok ? null : message.ToStringAndClear();

    [Fact]
    public void A_passing_check_evaluates_none_of_its_holes()
    {
        int evaluated = 0;
        string Describe() { evaluated++; return "x"; }
        for (int i = 0; i < 3; i++) Assert.Null(Check(true, $"tensor {Describe()} has {i} rows"));
        Assert.Equal(0, evaluated);
    }

    [Fact]
    public void A_failing_check_formats_the_whole_message()
    {
        int evaluated = 0;
        string Describe() { evaluated++; return "hidden F32[2,3]"; }
        Assert.Equal("tensor hidden F32[2,3] has 2 rows, 1.50 wide", Check(false, $"tensor {Describe()} has {2} rows, {1.5:F2} wide"));
        Assert.Equal(1, evaluated);
    }
}
