// Logit distillation compares the teacher's and the student's distributions token by token, so both must
// use one tokenizer: the same vocabulary size (LM head rows), and the same tokenizer.json, or at least the
// same token -> id map. Anything else is a one-line error naming both folders and the first difference.
using Temper.Core;
using Temper.Models;

namespace Temper.Training.Distill;

public static class SharedTokenizer
{
    public static void Check(LanguageModel teacher, LanguageModel student)
    {
        string who = $"teacher {teacher.Directory} and student {student.Directory}";
        if (teacher.Config.VocabSize != student.Config.VocabSize)
            throw new TemperException($"{who} have different vocabulary sizes ({teacher.Config.VocabSize} vs {student.Config.VocabSize}); logit distillation needs one tokenizer");
        var (tt, st) = (teacher.RequireTokenizer(), student.RequireTokenizer());
        if (File.ReadAllBytes(Path.Combine(teacher.Directory, "tokenizer.json")).AsSpan().SequenceEqual(File.ReadAllBytes(Path.Combine(student.Directory, "tokenizer.json"))))
            return;
        if (tt.VocabSize != st.VocabSize)
            throw new TemperException($"{who} have tokenizers of {tt.VocabSize} and {st.VocabSize} tokens; logit distillation needs one tokenizer");
        for (int id = 0; id < teacher.Config.VocabSize; id++)
            if (Piece(tt, id) != Piece(st, id))
                throw new TemperException($"{who} have different tokenizers: id {id} is '{Piece(tt, id)}' vs '{Piece(st, id)}'; logit distillation needs one tokenizer");
    }

    private static string? Piece(Models.Text.HfTokenizer tok, int id)
    {
        try { return tok.TokenToString(id); }
        catch (ArgumentOutOfRangeException) { return null; } // an id the tokenizer leaves unused (padded vocabularies)
    }
}
