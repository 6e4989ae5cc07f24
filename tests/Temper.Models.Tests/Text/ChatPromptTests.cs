// ChatPrompt: transformers' apply_chat_template options. continue_final_message cuts the rendered text right
// after the final message's content (or that content trimmed, for templates that trim it, as Llama 3.2's
// does), so the model continues the message; the expected texts are what Python Jinja2 renders
// (make_expected.py's environment) cut by transformers' rule. Template variables (chat_template_kwargs)
// reach the template; contradictory or malformed options are refused in one line.
using System.Text.Json.Nodes;
using Temper.Core;
using Temper.Models.Text;

namespace Temper.Tests.Text;

public class ChatPromptTests
{
    private static JsonArray Conversation(string assistant) => new(
        new JsonObject { ["role"] = "user", ["content"] = "Give me JSON." },
        new JsonObject { ["role"] = "assistant", ["content"] = assistant });

    private static readonly Dictionary<string, JsonNode?> LlamaTokens = new()
    {
        ["bos_token"] = "<|begin_of_text|>", ["eos_token"] = "<|eot_id|>", ["date_string"] = "26 Jul 2024",
    };

    private const string QwenHead = "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n" +
                                    "<|im_start|>user\nGive me JSON.<|im_end|>\n<|im_start|>assistant\n";
    private const string LlamaHead = "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\n" +
                                     "Today Date: 26 Jul 2024\n\n<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nGive me JSON.<|eot_id|>" +
                                     "<|start_header_id|>assistant<|end_header_id|>\n\n";

    [Theory]
    [InlineData("qwen2.5.jinja", "Sure, here it is: {", QwenHead + "Sure, here it is: {")]
    [InlineData("qwen2.5.jinja", "Sure,  ", QwenHead + "Sure,  ")]
    [InlineData("llama3.2.jinja", "Sure, here it is: {", LlamaHead + "Sure, here it is: {")]
    [InlineData("llama3.2.jinja", "Sure,  ", LlamaHead + "Sure,")] // the template trims the content: cut after the trimmed text
    public void Continue_final_message_ends_inside_the_last_message(string template, string assistant, string expected)
    {
        var o = new ChatPromptOptions { AddGenerationPrompt = false, ContinueFinalMessage = true, TemplateKwargs = template.StartsWith("llama", StringComparison.Ordinal) ? LlamaTokens : null };
        Assert.Equal(expected, ChatPrompt.Render(TemplateExpectations.LoadTemplate(template), Conversation(assistant), o));
    }

    [Fact]
    public void Template_kwargs_reach_the_template()
    {
        var t = ChatTemplate.Parse("{% for m in messages %}{{ m.content }}{% endfor %}{% if add_generation_prompt %}<a>{% if enable_thinking is defined and enable_thinking is false %}<think></think>{% endif %}{% endif %}");
        var messages = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = "hi" });
        Assert.Equal("hi<a>", ChatPrompt.Render(t, messages, new ChatPromptOptions()));
        var off = new ChatPromptOptions { TemplateKwargs = ChatPromptOptions.ParseKwargs("""{"enable_thinking": false}""", "--chat-template-kwargs") };
        Assert.Equal("hi<a><think></think>", ChatPrompt.Render(t, messages, off));
    }

    [Fact]
    public void Contradictory_or_malformed_options_are_refused()
    {
        var t = TemplateExpectations.LoadTemplate("qwen2.5.jinja");
        var e = Assert.Throws<TemperException>(() => ChatPrompt.Render(t, Conversation("x"), new ChatPromptOptions { ContinueFinalMessage = true }));
        Assert.Equal("add_generation_prompt and continue_final_message cannot both be true", e.Message);
        e = Assert.Throws<TemperException>(() => ChatPromptOptions.ParseKwargs("[1]", "--chat-template-kwargs"));
        Assert.Equal("--chat-template-kwargs must be a JSON object of template variables", e.Message);
        e = Assert.Throws<TemperException>(() => ChatPromptOptions.ParseKwargs("{", "--chat-template-kwargs"));
        Assert.StartsWith("--chat-template-kwargs: malformed JSON", e.Message);
    }
}
