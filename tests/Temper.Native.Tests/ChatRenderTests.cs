// temper_model_chat_render_vars: template variables (transformers' apply_chat_template kwargs, e.g. Qwen3's
// enable_thinking) reach the chat template, on a copy of the llama-tiny fixture whose template reads one;
// NULL is no variables (temper_model_chat_render's text); anything but a JSON object is refused by name.
using System.Runtime.InteropServices;
using System.Text;
using Temper.Native;
using Temper.Native.Exports;

namespace Temper.Tests;

public sealed unsafe class ChatRenderTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("temper-native-chat-").FullName;
    private readonly nint _model;

    public ChatRenderTests()
    {
        foreach (var f in Directory.GetFiles(Fixtures.Hf("llama-tiny"))) File.Copy(f, Path.Combine(_dir, Path.GetFileName(f)));
        File.Delete(Path.Combine(_dir, "chat_template.jinja"));
        File.WriteAllText(Path.Combine(_dir, "chat_template.jinja"),
            "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}{% if add_generation_prompt %}<assistant>{% if enable_thinking is defined and enable_thinking is false %}<think></think>{% endif %}{% endif %}");
        nint m = 0;
        fixed (byte* p = Encoding.UTF8.GetBytes(_dir + "\0"))
            Assert.True(((delegate* unmanaged<byte*, TemperModelOptions*, nint*, int>)&ModelExports.ModelLoad)(p, null, &m) == 0, LastError());
        _model = m;
    }

    public void Dispose()
    {
        ((delegate* unmanaged<nint, int>)&ModelExports.ModelFree)(_model);
        Directory.Delete(_dir, true);
    }

    private static string LastError() => NativeFixture.LastError();

    // Renders with the export (kwargs null = none); returns the text, or null and the status on error.
    private (string? Text, int Status) Render(string messages, string? kwargs)
    {
        var msg = Encoding.UTF8.GetBytes(messages + "\0");
        var kw = kwargs == null ? null : Encoding.UTF8.GetBytes(kwargs + "\0");
        var text = new byte[256];
        fixed (byte* pm = msg) fixed (byte* pk = kw) fixed (byte* pt = text)
        {
            int n = ((delegate* unmanaged<nint, byte*, int, byte*, byte*, int, int>)&ModelExports.ModelChatRenderVars)(_model, pm, 1, pk, pt, text.Length);
            return n < 0 ? (null, n) : (Encoding.UTF8.GetString(text, 0, n - 1), n);
        }
    }

    [Fact]
    public void Template_variables_reach_the_template()
    {
        const string messages = """[{"role": "user", "content": "hi"}]""";
        Assert.Equal("<user>hi<assistant>", Render(messages, null).Text);
        Assert.Equal("<user>hi<assistant><think></think>", Render(messages, """{"enable_thinking": false}""").Text);
        Assert.Equal("<user>hi<assistant>", Render(messages, """{"enable_thinking": true}""").Text);
    }

    [Theory]
    [InlineData("[1]", "temper_model_chat_render_vars: template_kwargs_json must be a JSON object of template variables")]
    [InlineData("{", "temper_model_chat_render_vars: template_kwargs_json: malformed JSON")]
    public void Anything_but_an_object_is_refused(string kwargs, string message)
    {
        var (text, status) = Render("""[{"role": "user", "content": "hi"}]""", kwargs);
        Assert.Null(text);
        Assert.Equal((int)TemperStatus.InvalidArgument, status);
        Assert.StartsWith(message, LastError());
    }
}
