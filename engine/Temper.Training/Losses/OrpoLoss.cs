// Odds Ratio Preference Optimization (TRL's ORPO), no reference model:
//   loss = NLL(chosen) - lambda * mean_i log s(logodds(lc_i) - logodds(lr_i)),
// NLL = token-level mean cross-entropy over all chosen completion tokens of the batch, l = the
// length-averaged completion log-prob, logodds(l) = l - log(1 - exp(l)). Inputs are summed log-probs
// and token counts; returns dLoss/d(summed log-prob) of each chosen and rejected completion.
namespace Temper.Training.Losses;

public sealed record OrpoResult(double Loss, double Nll, double[] LogOddsRatio, double[] DChosen, double[] DRejected);

public static class OrpoLoss
{
    public static OrpoResult Compute(ReadOnlySpan<double> chosenSum, ReadOnlySpan<int> chosenTokens, ReadOnlySpan<double> rejectedSum, ReadOnlySpan<int> rejectedTokens, double lambda)
    {
        int n = chosenSum.Length;
        if (chosenTokens.Length != n || rejectedSum.Length != n || rejectedTokens.Length != n || n == 0) throw new ArgumentException("ORPO needs equal, non-empty vectors");
        double totalChosen = 0, sumChosen = 0;
        for (int i = 0; i < n; i++) { totalChosen += chosenTokens[i]; sumChosen += chosenSum[i]; }
        double nll = -sumChosen / totalChosen, odds = 0;
        var lor = new double[n];
        var dc = new double[n];
        var dr = new double[n];
        for (int i = 0; i < n; i++)
        {
            double lc = chosenSum[i] / chosenTokens[i], lr = rejectedSum[i] / rejectedTokens[i];
            lor[i] = LogOdds(lc) - LogOdds(lr);
            odds += DpoLoss.LogSigmoid(lor[i]) / n;
            double g = -lambda / n * DpoLoss.Sigmoid(-lor[i]); // dLoss/d lor_i
            dc[i] = -1 / totalChosen + g / (1 - Math.Exp(lc)) / chosenTokens[i];
            dr[i] = -g / (1 - Math.Exp(lr)) / rejectedTokens[i];
        }
        return new OrpoResult(nll - lambda * odds, nll, lor, dc, dr);
    }

    private static double LogOdds(double l) => l - Math.Log(1 - Math.Exp(l)); // l < 0, so 1 - e^l > 0
}
