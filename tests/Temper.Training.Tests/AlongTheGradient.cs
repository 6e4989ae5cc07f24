// A backward pass checked along its own gradient: the parameters are moved by +-h along the unit gradient and the
// central difference of the (f32) loss must equal the gradient's norm, the directional derivative, within 2%. Along
// the gradient the derivative is as large as it gets, well above the loss's rounding, so one direction checks every
// parameter at once.
using Temper.Training;

namespace Temper.Tests;

internal static class AlongTheGradient
{
    public static void AssertMatches(TrainableParameters ps, Func<double> loss, double h = 1e-2)
    {
        var grad = ps.All.Select(p => p.Grad.Floats.ToArray()).ToArray();
        double gnorm = Math.Sqrt(grad.Sum(g => g.Sum(x => (double)x * x)));
        Assert.True(gnorm > 0, "the gradient is zero; the check would prove nothing");
        void Move(double step)
        {
            for (int i = 0; i < grad.Length; i++)
            {
                var values = ps.All[i].Value.Floats;
                for (int j = 0; j < values.Length; j++) values[j] += (float)(step * grad[i][j] / gnorm);
            }
        }
        Move(h);
        double up = loss();
        Move(-2 * h);
        double down = loss();
        Move(h);
        double fd = (up - down) / (2 * h);
        Assert.True(Math.Abs(fd - gnorm) <= 2e-2 * gnorm + 1e-4, $"directional derivative: central differences {fd:G6}, backward {gnorm:G6}");
    }
}
