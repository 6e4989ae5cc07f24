// GPT-2's byte-level alphabet: each of the 256 byte values stands for one printable char (space is 'Ġ',
// '\n' is 'Ċ'), so byte-level BPE vocabularies are plain strings. Encoding maps UTF-8 bytes to those
// chars; decoding maps them back and reads the bytes as UTF-8 (bad sequences become U+FFFD, as HF does).
using System.Text;

namespace Temper.Models.Text;

internal static class ByteLevelAlphabet
{
    private static readonly char[] _byteToChar = BuildByteToChar();
    private static readonly Dictionary<char, byte> _charToByte = BuildCharToByte(_byteToChar);

    /// <summary>The char that stands for byte <paramref name="b"/>.</summary>
    public static char CharOf(byte b) => _byteToChar[b];

    public static bool TryGetByte(char c, out byte b) => _charToByte.TryGetValue(c, out b);

    /// <summary>The text's UTF-8 bytes, each written as its alphabet char.</summary>
    public static string Encode(string text)
    {
        var bytes = Encoding.UTF8.GetBytes(text);
        var chars = new char[bytes.Length];
        for (int i = 0; i < bytes.Length; i++) chars[i] = _byteToChar[bytes[i]];
        return new string(chars);
    }

    /// <summary>
    /// Appends the bytes a token stands for. A token holding any char outside the alphabet (an added
    /// token such as "&lt;|im_start|&gt;" with a space, say) contributes its own UTF-8 bytes, as in HF.
    /// </summary>
    public static void AppendBytes(string token, List<byte> bytes)
    {
        int start = bytes.Count;
        foreach (char c in token)
        {
            if (!_charToByte.TryGetValue(c, out byte b))
            {
                bytes.RemoveRange(start, bytes.Count - start);
                bytes.AddRange(Encoding.UTF8.GetBytes(token));
                return;
            }
            bytes.Add(b);
        }
    }

    // Printable Latin-1 bytes stand for themselves; the other 68 (controls, space, 0x7F-0xA0, 0xAD)
    // take the chars from U+0100 upwards, in byte order.
    private static char[] BuildByteToChar()
    {
        var map = new char[256];
        int next = 256;
        for (int b = 0; b < 256; b++)
        {
            bool printable = b is >= '!' and <= '~' or >= 0xA1 and <= 0xAC or >= 0xAE and <= 0xFF;
            map[b] = printable ? (char)b : (char)next++;
        }
        return map;
    }

    private static Dictionary<char, byte> BuildCharToByte(char[] byteToChar)
    {
        var map = new Dictionary<char, byte>(256);
        for (int b = 0; b < 256; b++) map[byteToChar[b]] = (byte)b;
        return map;
    }
}
