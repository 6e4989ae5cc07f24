// The Split regexes of the byte-level BPE families, as their tokenizer.json files hold them (HF's Oniguruma syntax):
// Llama 3's (digits in runs of up to 3) and Qwen's (single digits). llama.cpp's pre-tokenizers "llama-bpe" and "qwen2"
// apply the same; GGUF export and import and transformers 5's Qwen pipeline (TokenizerArchitecture) name them here.
namespace Temper.Models.Text;

internal static class PreTokenizerPatterns
{
    public const string Llama3 = """(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""";
    public const string Qwen = """(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""";
}
