/* tests/http/test_chat.c — chat templates rendered against exact strings written by hand from
 * each family's published prompt format (Meta's Llama 2 and Llama 3 model cards, ChatML as
 * used by Qwen, Mistral's instruction format), family recognition from template sources, and
 * the UTF-8 hold-back every text stream uses (runtime/utf8.h) and the HTTP front end's
 * bearer-token check. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat.h"
#include "server.h"
#include "utf8.h"

static int n_pass, n_fail;

static void check(int ok, const char *what) {
    if (ok) n_pass++;
    else {
        n_fail++;
        printf("FAIL: %s\n", what);
    }
}

static void check_render(chat_family f, const char *default_system, const chat_msg *m, int n,
                         const char *want, const char *what) {
    chat_tmpl t = { .family = f };
    if (default_system) snprintf(t.default_system, sizeof t.default_system, "%s", default_system);
    char err[256] = "";
    char *got = chat_render(&t, m, n, err, sizeof err);
    int ok = got && !strcmp(got, want);
    check(ok, what);
    if (!ok) printf("  want: \"%s\"\n  got:  \"%s\" %s\n", want, got ? got : "(null)", err);
    free(got);
}

static void check_detect(const char *src, chat_family want, const char *want_system,
                         const char *what) {
    chat_tmpl t;
    chat_tmpl_detect(src, src ? strlen(src) : 0, &t);
    int ok = t.family == want && !strcmp(t.default_system, want_system);
    check(ok, what);
    if (!ok)
        printf("  want %s \"%s\", got %s \"%s\"\n", chat_family_name(want), want_system,
               chat_family_name(t.family), t.default_system);
}

/* a conversation: system, user, assistant, user */
static const chat_msg conv[] = {
    { CHAT_SYSTEM, "You are kind." },
    { CHAT_USER, "Hi there" },
    { CHAT_ASSISTANT, "Hello!" },
    { CHAT_USER, "How are you?" },
};
static const chat_msg one_user[] = { { CHAT_USER, "Hi" } };
static const chat_msg padded[] = { { CHAT_USER, "  Hi there \n" } };

static void test_render(void) {
    /* Llama 2: <s>[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST] {answer} </s><s>[INST] ...
     * (the first <s> is the tokenizer's BOS, not in the text) */
    check_render(CHAT_LLAMA2, NULL, conv, 4,
                 "[INST] <<SYS>>\nYou are kind.\n<</SYS>>\n\nHi there [/INST] Hello! </s>"
                 "<s>[INST] How are you? [/INST]",
                 "llama2 conversation");
    check_render(CHAT_LLAMA2, NULL, one_user, 1, "[INST] Hi [/INST]", "llama2 one user message");
    check_render(CHAT_LLAMA2, NULL, padded, 1, "[INST] Hi there [/INST]", "llama2 strips content");

    /* Llama 3: <|begin_of_text|> (BOS) then per message
     * <|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|>, then the assistant
     * header */
    check_render(CHAT_LLAMA3, NULL, conv, 4,
                 "<|start_header_id|>system<|end_header_id|>\n\nYou are kind.<|eot_id|>"
                 "<|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>"
                 "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>"
                 "<|start_header_id|>user<|end_header_id|>\n\nHow are you?<|eot_id|>"
                 "<|start_header_id|>assistant<|end_header_id|>\n\n",
                 "llama3 conversation");
    check_render(CHAT_LLAMA3, NULL, padded, 1,
                 "<|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>"
                 "<|start_header_id|>assistant<|end_header_id|>\n\n",
                 "llama3 trims content");

    /* ChatML: <|im_start|>{role}\n{content}<|im_end|>\n ... <|im_start|>assistant\n */
    check_render(CHAT_CHATML, NULL, conv, 4,
                 "<|im_start|>system\nYou are kind.<|im_end|>\n"
                 "<|im_start|>user\nHi there<|im_end|>\n"
                 "<|im_start|>assistant\nHello!<|im_end|>\n"
                 "<|im_start|>user\nHow are you?<|im_end|>\n"
                 "<|im_start|>assistant\n",
                 "chatml conversation");
    check_render(CHAT_CHATML, "You are a helpful assistant.", one_user, 1,
                 "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                 "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
                 "chatml default system message (Qwen)");
    check_render(CHAT_CHATML, "You are a helpful assistant.", conv, 4,
                 "<|im_start|>system\nYou are kind.<|im_end|>\n"
                 "<|im_start|>user\nHi there<|im_end|>\n"
                 "<|im_start|>assistant\nHello!<|im_end|>\n"
                 "<|im_start|>user\nHow are you?<|im_end|>\n"
                 "<|im_start|>assistant\n",
                 "chatml: a given system message replaces the default");

    /* Mistral: <s>[INST] {user} [/INST]{answer}</s>[INST] {user} [/INST]; the system message
     * goes in front of the first user message */
    check_render(CHAT_MISTRAL, NULL, conv, 4,
                 "[INST] You are kind.\n\nHi there [/INST]Hello!</s>[INST] How are you? [/INST]",
                 "mistral conversation");
    check_render(CHAT_MISTRAL, NULL, one_user, 1, "[INST] Hi [/INST]", "mistral one user message");

    /* plain fallback */
    check_render(CHAT_PLAIN, NULL, conv, 4,
                 "System: You are kind.\nUser: Hi there\nAssistant: Hello!\nUser: How are you?\n"
                 "Assistant:",
                 "plain conversation");
    check_render(CHAT_PLAIN, NULL, one_user, 1, "User: Hi\nAssistant:", "plain one user message");

    /* refusals */
    chat_tmpl t = { .family = CHAT_LLAMA2 };
    const chat_msg late_system[] = { { CHAT_USER, "a" }, { CHAT_SYSTEM, "b" } };
    char err[256] = "";
    char *s = chat_render(&t, late_system, 2, err, sizeof err);
    check(!s && strstr(err, "messages[1]") != NULL, "llama2 refuses a system message after the first");
    free(s);
    s = chat_render(&t, conv, 0, err, sizeof err);
    check(!s && strstr(err, "at least one") != NULL, "no messages is an error");
    free(s);
}

static void test_detect(void) {
    check_detect(NULL, CHAT_PLAIN, "", "no template: plain");
    check_detect("", CHAT_PLAIN, "", "empty template: plain");
    check_detect("{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
                 "{% set system_message = messages[0]['content'] %}{% endif %}"
                 "{% for message in loop_messages %}{% if loop.index0 == 0 and system_message %}"
                 "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + "
                 "message['content'] %}{% endif %}{% if message['role'] == 'user' %}"
                 "{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% endif %}{% endfor %}",
                 CHAT_LLAMA2, "", "llama2 template");
    check_detect("{% set loop_messages = messages %}{% for message in loop_messages %}"
                 "{% set content = '<|start_header_id|>' + message['role'] + "
                 "'<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' %}"
                 "{{ content }}{% endfor %}",
                 CHAT_LLAMA3, "", "llama3 template");
    check_detect("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
                 "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
                 "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}",
                 CHAT_CHATML, "", "chatml template without a default system message");
    check_detect("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
                 "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
                 "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
                 "{% endfor %}",
                 CHAT_CHATML, "You are a helpful assistant.", "qwen2 template: default system message");
    check_detect("{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\\n' + "
                 "messages[0]['content'] + '<|im_end|>\\n' }}{%- else %}{{- '<|im_start|>system\\n"
                 "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}"
                 "{%- endif %}",
                 CHAT_CHATML, "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
                 "qwen2.5 template: the literal default, not the expression");
    check_detect("{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
                 "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == "
                 "'assistant' %}{{ message['content'] + eos_token}}{% endif %}{% endfor %}",
                 CHAT_MISTRAL, "", "mistral template");
    check_detect("{% for message in messages %}{{ '<start_of_turn>' + message['role'] + '\\n' }}"
                 "{% endfor %}",
                 CHAT_PLAIN, "", "unknown template (gemma): plain");

    chat_family f;
    check(chat_family_parse("chatml", &f) == 0 && f == CHAT_CHATML, "family name chatml");
    check(chat_family_parse("jinja", &f) == -1, "unknown family name");
    chat_role r;
    check(chat_role_parse("developer", &r) == 0 && r == CHAT_SYSTEM, "developer is system");
    check(chat_role_parse("tool", &r) == -1, "tool role refused");
}

/* DeepSeek: the R1 template's source (abridged from tokenizer_config.json: the parts that
 * decide what these messages render), V3's (no thought handling), R1-0528's generation prompt
 * and V2's; the 4-message conversation of the DeepSeek issue's acceptance. The markers are the
 * fullwidth bar U+FF5C and U+2581. */
#define DS_U "<\xef\xbd\x9cUser\xef\xbd\x9c>"
#define DS_A "<\xef\xbd\x9c" "Assistant\xef\xbd\x9c>"
#define DS_E "<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>"
static void test_deepseek(void) {
    static const char r1[] =
        "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}"
        "{% set ns = namespace(is_first=false, is_tool=false, is_output_first=true, system_prompt='') %}"
        "{%- for message in messages %}{%- if message['role'] == 'system' %}{% set ns.system_prompt = "
        "message['content'] %}{%- endif %}{%- endfor %}{{bos_token}}{{ns.system_prompt}}"
        "{%- for message in messages %}{%- if message['role'] == 'user' %}{%- set ns.is_tool = false -%}"
        "{{'" DS_U "' + message['content']}}{%- endif %}"
        "{%- if message['role'] == 'assistant' and message['content'] is not none %}"
        "{% set content = message['content'] %}{% if '</think>' in content %}"
        "{% set content = content.split('</think>')[-1] %}{% endif %}"
        "{{'" DS_A "' + content + '" DS_E "'}}{%- endif %}{%- endfor -%}"
        "{% if add_generation_prompt and not ns.is_tool %}{{'" DS_A "'}}{% endif %}";
    static const char v3[] =
        "{{bos_token}}{{ns.system_prompt}}{%- for message in messages %}{%- if message['role'] == 'user' %}"
        "{{'" DS_U "' + message['content']}}{%- endif %}{%- if message['role'] == 'assistant' %}"
        "{{'" DS_A "' + message['content'] + '" DS_E "'}}{%- endif %}{%- endfor -%}"
        "{% if add_generation_prompt %}{{'" DS_A "'}}{% endif %}";
    static const char r1_0528_tail[] = "{% if add_generation_prompt %}{{'" DS_A "<think>\\n'}}{% endif %}";
    static const char v2[] =
        "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}"
        "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
        "{{ 'User: ' + message['content'] + '\\n\\n' }}{% elif message['role'] == 'assistant' %}"
        "{{ 'Assistant: ' + message['content'] + eos_token }}{% elif message['role'] == 'system' %}"
        "{{ message['content'] + '\\n\\n' }}{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}";
    const chat_msg conv[] = { { CHAT_SYSTEM, "system" }, { CHAT_USER, "u1" },
                              { CHAT_ASSISTANT, "a1" }, { CHAT_USER, "u2" } };
    char err[256] = "";
    chat_tmpl t;
    chat_tmpl_detect(r1, strlen(r1), &t);
    check(t.family == CHAT_DEEPSEEK3 && t.reasoning && !t.think_prompt, "deepseek: R1's template is deepseek3, reasoning");
    char *got = chat_render(&t, conv, 4, err, sizeof err);
    const char *want = "system" DS_U "u1" DS_A "a1" DS_E DS_U "u2" DS_A;
    check(got && !strcmp(got, want), "deepseek: R1 renders the acceptance's 4-message string");
    if (got && strcmp(got, want)) printf("  got: \"%s\"\n", got);
    free(got);
    const chat_msg thought[] = { { CHAT_USER, "u1" }, { CHAT_ASSISTANT, "<think>\nhm</think>\n\na1" },
                                 { CHAT_USER, "u2" } };
    got = chat_render(&t, thought, 3, err, sizeof err);
    check(got && !strcmp(got, DS_U "u1" DS_A "\n\na1" DS_E DS_U "u2" DS_A),
          "deepseek: R1 drops an earlier answer's thought (split('</think>')[-1])");
    free(got);
    chat_tmpl_detect(v3, strlen(v3), &t);
    check(t.family == CHAT_DEEPSEEK3 && !t.reasoning, "deepseek: V3's template is deepseek3, no reasoning");
    got = chat_render(&t, thought, 3, err, sizeof err);
    check(got && !strcmp(got, DS_U "u1" DS_A "<think>\nhm</think>\n\na1" DS_E DS_U "u2" DS_A),
          "deepseek: V3 keeps the assistant text as it is");
    free(got);
    char r1b[sizeof r1 + sizeof r1_0528_tail];
    snprintf(r1b, sizeof r1b, "%s%s", r1, r1_0528_tail);
    chat_tmpl_detect(r1b, strlen(r1b), &t);
    got = chat_render(&t, conv + 1, 1, err, sizeof err);
    check(t.reasoning && t.think_prompt && got && !strcmp(got, DS_U "u1" DS_A "<think>\n"),
          "deepseek: R1-0528's generation prompt opens the thought");
    free(got);
    const chat_msg two_sys[] = { { CHAT_SYSTEM, "s1" }, { CHAT_SYSTEM, "s2" }, { CHAT_USER, "u" } };
    got = chat_render(&t, two_sys, 3, err, sizeof err);
    check(got && !strncmp(got, "s1\n\ns2" DS_U "u", strlen("s1\n\ns2" DS_U "u")), "deepseek: system messages joined by a blank line");
    free(got);
    chat_tmpl_detect(v2, strlen(v2), &t);
    check(t.family == CHAT_DEEPSEEK2, "deepseek: V2's template is deepseek2");
    got = chat_render(&t, conv, 4, err, sizeof err);
    check(got && !strcmp(got, "system\n\nUser: u1\n\nAssistant: a1" DS_E "User: u2\n\nAssistant:"),
          "deepseek: V2 renders as llama.cpp's deepseek2");
    free(got);
}

static void test_utf8(void) {
    check(3 - utf8_incomplete_tail("abc", 3) == 3, "utf8: ascii");
    check(3 - utf8_incomplete_tail("a\xE2\x82", 3) == 1, "utf8: 2 of 3 bytes held");
    check(4 - utf8_incomplete_tail("a\xE2\x82\xAC", 4) == 4, "utf8: euro sign complete");
    check(3 - utf8_incomplete_tail("\xF0\x9F\x98", 3) == 0, "utf8: 3 of 4 bytes held");
    check(4 - utf8_incomplete_tail("\xF0\x9F\x98\x80", 4) == 4, "utf8: emoji complete");
    check(2 - utf8_incomplete_tail("x\xC3", 2) == 1, "utf8: lone lead byte held");
    check(2 - utf8_incomplete_tail("a\x80", 2) == 2, "utf8: stray continuation not held");
    check(1 - utf8_incomplete_tail("\xFF", 1) == 1, "utf8: invalid byte not held");
    check(0 - utf8_incomplete_tail("", 0) == 0, "utf8: empty");
}

static void test_auth(void) {
    check(http_auth_ok("Bearer sekret", "sekret"), "auth: exact");
    check(http_auth_ok("bearer sekret", "sekret"), "auth: scheme is case-insensitive");
    check(http_auth_ok("Bearer   sekret  ", "sekret"), "auth: spaces around the token");
    check(!http_auth_ok("Bearer sekre", "sekret"), "auth: prefix of the key");
    check(!http_auth_ok("Bearer sekret1", "sekret"), "auth: key plus a byte");
    check(!http_auth_ok("Bearer SEKRET", "sekret"), "auth: key is case-sensitive");
    check(!http_auth_ok("Basic sekret", "sekret"), "auth: other scheme");
    check(!http_auth_ok("Bearersekret", "sekret"), "auth: no space");
    check(!http_auth_ok("Bearer ", "sekret"), "auth: empty token");
    check(!http_auth_ok(NULL, "sekret"), "auth: no header");
}

int main(void) {
    test_render();
    test_detect();
    test_deepseek();
    test_utf8();
    test_auth();
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}
