// cpp-host: libtemper from C++ - RAII handles (std::unique_ptr with the *_free functions), errors as
// exceptions, streaming generation into a lambda. Also a ctest check: against FIXTURE_DIR's
// reference.json it tokenizes and detokenizes the tokenizer cases, renders the chat template case,
// and streams a generation whose pieces add up to the detokenized ids.
//
//   cpp-host FIXTURE_DIR [PROMPT]
#include "temper.h"
#include "../common/fixture.h"

#include <cstdio>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace temper {

struct error : std::runtime_error {
    int32_t status;
    error(int32_t s, const std::string& what) : std::runtime_error(what), status(s) {}
};

// Throws for a negative status/size, returns it otherwise.
inline int32_t check(int32_t rc, const char* call) {
    if (rc < 0) throw error(rc, std::string(call) + ": " + temper_status_name(rc) + ": " + temper_last_error());
    return rc;
}

struct model_free { void operator()(temper_model* m) const { temper_model_free(m); } };

class model {
public:
    explicit model(const std::string& dir, int threads = 0) {
        temper_model_options o = temper_model_options_default();
        o.threads = threads;
        temper_model* m = nullptr;
        check(temper_model_load(dir.c_str(), &o, &m), "temper_model_load");
        handle_.reset(m);
    }

    int32_t vocab_size() const { return check(temper_model_vocab_size(handle_.get()), "temper_model_vocab_size"); }

    std::vector<int32_t> tokenize(const std::string& text) const {
        std::vector<int32_t> ids(check(temper_model_tokenize(handle_.get(), text.c_str(), nullptr, 0), "temper_model_tokenize"));
        check(temper_model_tokenize(handle_.get(), text.c_str(), ids.data(), (int32_t)ids.size()), "temper_model_tokenize");
        return ids;
    }

    std::string detokenize(const std::vector<int32_t>& ids, bool skip_special = false) const {
        int32_t need = check(temper_model_detokenize(handle_.get(), ids.data(), (int32_t)ids.size(), skip_special, nullptr, 0), "temper_model_detokenize");
        std::string s(need, '\0');
        check(temper_model_detokenize(handle_.get(), ids.data(), (int32_t)ids.size(), skip_special, &s[0], need), "temper_model_detokenize");
        s.resize(need - 1);
        return s;
    }

    std::string chat(const std::string& messages_json, bool add_generation_prompt) const {
        int32_t need = check(temper_model_chat_render(handle_.get(), messages_json.c_str(), add_generation_prompt, nullptr, 0), "temper_model_chat_render");
        std::string s(need, '\0');
        check(temper_model_chat_render(handle_.get(), messages_json.c_str(), add_generation_prompt, &s[0], need), "temper_model_chat_render");
        s.resize(need - 1);
        return s;
    }

    // Streams each generated token to on_token(id, piece); returning false stops.
    temper_generate_result generate(const std::vector<int32_t>& prompt, const temper_generate_options& o,
                                    const std::function<bool(int32_t, const char*)>& on_token) {
        temper_generate_result r{};
        auto trampoline = [](int32_t id, const char* piece, void* user) -> int {
            auto* f = static_cast<const std::function<bool(int32_t, const char*)>*>(user);
            try {
                return (*f)(id, piece) ? 0 : 1;
            } catch (...) {
                return 1;  // never let a C++ exception unwind through libtemper
            }
        };
        check(temper_model_generate(handle_.get(), prompt.data(), (int32_t)prompt.size(), &o, trampoline,
                                    const_cast<std::function<bool(int32_t, const char*)>*>(&on_token), nullptr, 0, &r),
              "temper_model_generate");
        return r;
    }

private:
    std::unique_ptr<temper_model, model_free> handle_;
};

}  // namespace temper

static int failures = 0;

static void expect(bool ok, const std::string& what) {
    std::printf("  %-6s %s\n", ok ? "ok" : "FAIL", what.c_str());
    if (!ok) failures++;
}

int main(int argc, char** argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: %s FIXTURE_DIR [PROMPT]\n", argv[0]);
        return 2;
    }
    std::string dir = argv[1];
    char err[512];
    std::unique_ptr<fx_json, void (*)(fx_json*)> ref(fx_json_load((dir + "/reference.json").c_str(), err, sizeof err), fx_json_free);
    if (!ref) {
        std::fprintf(stderr, "FAIL: %s\n", err);
        return 1;
    }
    try {
        temper::model m(dir, 2);
        std::printf("cpp-host: libtemper %s, %s, vocab %d\n", temper_version(), dir.c_str(), m.vocab_size());

        const fx_json* cases = fx_json_get(ref.get(), "tokenize");
        for (size_t i = 0; cases && i < cases->length; i++) {
            const fx_json* c = &cases->items[i];
            std::string text = fx_json_get(c, "text")->string;
            int32_t n = 0;
            std::unique_ptr<int32_t, void (*)(void*)> want(fx_json_int_array(fx_json_get(c, "ids"), &n), std::free);
            std::vector<int32_t> expected(want.get(), want.get() + n);
            auto got = m.tokenize(text);
            expect(got == expected, "tokenize case " + std::to_string(i) + " (" + std::to_string(n) + " ids)");
            expect(m.detokenize(got) == text, "detokenize case " + std::to_string(i) + " round-trips");
        }

        const fx_json* chat = fx_json_get(ref.get(), "chat_template");
        std::unique_ptr<char, void (*)(void*)> messages(fx_json_raw(fx_json_get(chat, "messages")), std::free);
        expect(m.chat(messages.get(), false) == fx_json_get(chat, "text")->string, "chat template render");
        // The reference renders the conversation without its last (assistant) message for this one.
        const fx_json* all = fx_json_get(chat, "messages");
        std::string head = "[";
        for (size_t i = 0; i + 1 < all->length; i++) {
            std::unique_ptr<char, void (*)(void*)> raw(fx_json_raw(&all->items[i]), std::free);
            head += (i ? ", " : "") + std::string(raw.get());
        }
        head += "]";
        expect(m.chat(head, true) == fx_json_get(chat, "text_with_generation_prompt")->string,
               "chat template render with the generation prompt");

        std::string question = argc > 2 ? argv[2] : "What is 2+2?";
        auto prompt = m.tokenize(m.chat("[{\"role\": \"user\", \"content\": \"" + question + "\"}]", true));
        temper_generate_options o = temper_generate_options_default();
        o.max_new_tokens = 12;
        o.ignore_eos = 1;
        std::string streamed;
        std::vector<int32_t> ids;
        std::printf("  stream: ");
        auto r = m.generate(prompt, o, [&](int32_t id, const char* piece) {
            ids.push_back(id);
            streamed += piece;
            std::fputs(piece, stdout);
            return true;
        });
        std::printf("\n");
        expect(r.generated == 12 && ids.size() == 12, "generated 12 tokens through the lambda");
        expect(streamed == m.detokenize(ids, true), "streamed pieces add up to the detokenized ids");

        int calls = 0;
        r = m.generate(prompt, o, [&](int32_t, const char*) { return ++calls < 5; });
        expect(r.finish == TEMPER_FINISH_STOPPED && r.generated == 5, "returning false stops after 5 tokens");

        try {
            m.chat("not json", true);
            expect(false, "bad JSON must throw");
        } catch (const temper::error& e) {
            expect(e.status == TEMPER_E_INVALID_ARGUMENT, std::string("bad JSON throws: ") + e.what());
        }
    } catch (const temper::error& e) {
        std::fprintf(stderr, "FAIL: %s\n", e.what());
        return 1;
    }
    if (failures) {
        std::fprintf(stderr, "cpp-host: FAILED (%d)\n", failures);
        return 1;
    }
    std::printf("cpp-host: passed\n");
    return 0;
}
