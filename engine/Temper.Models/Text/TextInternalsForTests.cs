// Lets Temper.Models.Tests check the tokenizer's internal pieces (such as the regex translation) directly.
using System.Runtime.CompilerServices;

[assembly: InternalsVisibleTo("Temper.Models.Tests")]
