/* launch/chat.h — chat templates: a list of messages rendered into the prompt text a chat model
 * was trained on.
 *
 * GGUF files carry the template as Jinja source (`tokenizer.chat_template`). Rather than run
 * Jinja, chat_tmpl_detect recognises the common families by distinctive substrings and renders
 * them natively:
 *
 *   family    recognised by                      rendering (B = "<s>", E = "</s>", literally)
 *   llama3    "<|start_header_id|>"              <|start_header_id|>ROLE<|end_header_id|>\n\n
 *                                                CONTENT(trimmed)<|eot_id|> ... then
 *                                                <|start_header_id|>assistant<|end_header_id|>\n\n
 *   chatml    "<|im_start|>" (Qwen, ...)         <|im_start|>ROLE\nCONTENT<|im_end|>\n ... then
 *                                                <|im_start|>assistant\n ; a default system
 *                                                message written literally in the template
 *                                                (Qwen's "You are a helpful assistant.") is used
 *                                                when the conversation has none
 *   llama2    "[INST]" and "<<SYS>>"             B[INST] <<SYS>>\nSYS\n<</SYS>>\n\nUSER [/INST]
 *                                                 ASSISTANT EB[INST] USER [/INST] ... (turns
 *                                                trimmed; every user turn opens with B)
 *   mistral   "[INST]" without "<<SYS>>"         B[INST] USER [/INST]ASSISTANTE[INST] USER
 *                                                [/INST] ... (B only at the start); a system
 *                                                message is prepended to the user message
 *                                                right after it, followed by "\n\n"
 *   (llama2, mistral: a system message not followed by a user message gets a turn of its
 *   own at the start: "[INST] <<SYS>>\nS\n<</SYS>> [/INST]", mistral "[INST] S [/INST]")
 *   deepseek3 "<｜User｜>", "<｜Assistant｜>" and  S<｜User｜>U<｜Assistant｜>A<｜end▁of▁sentence｜>
 *             "<｜end▁of▁sentence｜>" (DeepSeek-  <｜User｜>U ... then <｜Assistant｜> (system
 *             V3, R1 and their distills)         messages first, joined by "\n\n", as the
 *                                                Jinja source renders them); a reasoning
 *                                                template (its source names "</think>", R1)
 *                                                drops an earlier answer's thought (text up to
 *                                                its last "</think>") and, when the source
 *                                                opens the answer with "<think>\n", ends so
 *   deepseek2 "'Assistant: ' + message['content'] S\n\nUser: U\n\nAssistant: A<｜end▁of▁sentence｜>
 *             + eos_token" (DeepSeek-V2)         ... then "Assistant:" (llama.cpp's rendering)
 *   plain     anything else, or no template      "System: S\nUser: U\nAssistant: A\n" ...
 *                                                then "Assistant:"
 *
 * The rendered text does not start with BOS: the caller tokenizes it with add_special = 1 (the
 * tokenizer prepends BOS when the model wants one) and parse_special = 1 (so the markers above,
 * and the B/E of later turns, become their special token ids). Every rendering ends with the
 * opening of the assistant's turn (add_generation_prompt).
 */
#ifndef SAMPAN_CHAT_H
#define SAMPAN_CHAT_H

#include <stddef.h>

typedef enum {
    CHAT_PLAIN = 0,
    CHAT_LLAMA2,
    CHAT_LLAMA3,
    CHAT_CHATML,
    CHAT_MISTRAL,
    CHAT_DEEPSEEK3,
    CHAT_DEEPSEEK2
} chat_family;

#define CHAT_DEFAULT_SYSTEM_MAX 512

typedef struct {
    chat_family family;
    char default_system[CHAT_DEFAULT_SYSTEM_MAX];   /* "" = none */
    int reasoning;        /* a thinking model's template (DeepSeek-R1): answers start in a
                             thought that the API returns as reasoning_content (oai_think.c) */
    int think_prompt;     /* the generation prompt opens the thought: "<think>\n" */
} chat_tmpl;

typedef enum { CHAT_SYSTEM = 0, CHAT_USER, CHAT_ASSISTANT } chat_role;

typedef struct {
    chat_role role;
    const char *content;   /* NUL-terminated UTF-8 */
} chat_msg;

/* src: the Jinja source (len bytes, need not be NUL-terminated), or NULL for none. */
void chat_tmpl_detect(const char *src, size_t len, chat_tmpl *out);
/* "plain", "llama2", ... */
const char *chat_family_name(chat_family f);
/* name -> family (for --chat-template); -1 if unknown */
int chat_family_parse(const char *name, chat_family *out);
/* role names accepted from clients: "system" (and "developer"), "user", "assistant"; -1 else */
int chat_role_parse(const char *name, chat_role *out);

/* The prompt text for msgs[0..n) followed by the assistant turn opening: a malloc'd
 * NUL-terminated string, or NULL with a message in err (n < 1, a system message after the
 * first for llama2/mistral, out of memory). */
char *chat_render(const chat_tmpl *t, const chat_msg *msgs, int n, char *err, size_t errlen);

#endif
