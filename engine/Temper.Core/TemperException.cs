// The one exception type for bad input: its message is a single line naming the file, line or tensor
// and what is wrong. The CLI prints only the message (exit code 2) unless --verbose is given.
namespace Temper.Core;

public class TemperException : Exception
{
    public TemperException(string message) : base(message) { }
    public TemperException(string message, Exception inner) : base(message, inner) { }
    public TemperException() { }
}
