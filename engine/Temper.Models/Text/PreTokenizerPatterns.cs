// The Split regexes of the byte-level BPE families, as their tokenizer.json files hold them (HF's Oniguruma syntax):
// Llama 3's (digits in runs of up to 3), Qwen's (single digits), Mistral NeMo's Tekken (case-split words, single digits)
// and GPT-4o's (case-split words with contractions, digits in runs of up to 3; Phi-4, Llama 4). llama.cpp's pre-tokenizers
// "llama-bpe", "qwen2", "tekken" and "gpt-4o" apply the same (its llama-vocab.cpp quotes these as the originals); GGUF
// export and import and transformers 5's Qwen pipeline (TokenizerArchitecture) name them here.
namespace Temper.Models.Text;

internal static class PreTokenizerPatterns
{
    public const string Llama3 = """(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""";
    public const string Qwen = """(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""";
    public const string Tekken = """[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+""";
    public const string Gpt4o = """[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+""";
}
