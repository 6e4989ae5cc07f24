// A chat answer's parts, as the server and the IChatClient both give them: the thinking (the model's reasoning
// parser), the text, and the tool calls (the request's ToolPlan) found in the text after the thinking. Read whole
// (Read) or as the answer streams in (Stream: each text delta's thinking, text and completed calls).
namespace Temper.Serving.Http;

internal static class ChatAnswer
{
    /// <summary>The whole answer's thinking (null without a parser or when there is none), text (null when there is
    /// none, or calls replace it) and calls.</summary>
    public static (string? Reasoning, string? Content, IReadOnlyList<ToolCall> Calls) Read(ServedModel m, ToolPlan plan, string text)
    {
        string? reasoning = null, content = text;
        if (m.Reasoning != null) (reasoning, content) = m.Reasoning.Split(text);
        IReadOnlyList<ToolCall> calls = [];
        if (plan.ReadsCalls && content is string answer) (content, calls) = plan.Parse(answer, m.ToolCalls);
        return (reasoning, content, calls);
    }

    /// <summary>The parts of one streamed answer.</summary>
    public sealed class Stream(ServedModel m, ToolPlan plan)
    {
        private readonly ReasoningParser.Stream? _reasoning = m.Reasoning?.NewStream();
        private readonly IToolCallStream? _tools = plan.NewStream(m.ToolCalls);

        /// <summary>Calls sent so far.</summary>
        public int CallsSent { get; set; }

        /// <summary>The next text delta's thinking, text and completed calls (each maybe empty); <paramref name="last"/>: the
        /// answer has finished, so everything held comes out.</summary>
        public (string Reasoning, string Content, IReadOnlyList<ToolCall> Calls) Push(string delta, bool last)
        {
            string reasoning = "";
            if (_reasoning != null) (reasoning, delta) = _reasoning.Push(delta, last);
            IReadOnlyList<ToolCall> calls = [];
            if (_tools != null) (delta, calls) = _tools.Push(delta, last);
            return (reasoning, delta, calls);
        }
    }
}
