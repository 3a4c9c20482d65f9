"""Helper run in a subprocess by test_vllm.py: vLLM's workers need a __main__ guard."""

import json
import sys

if __name__ == "__main__":
    from vllm import LLM, SamplingParams

    path, out_path = sys.argv[1], sys.argv[2]
    questions = json.loads(sys.argv[3])
    llm = LLM(model=path, tokenizer=path, dtype="float32", enforce_eager=True,
              max_model_len=512, gpu_memory_utilization=0.3, seed=0)
    tok = llm.get_tokenizer()
    prompts = [tok.apply_chat_template([{"role": "user", "content": q}],
                                       add_generation_prompt=True, tokenize=False)
               for q in questions]
    params = SamplingParams(n=4, temperature=1.0, max_tokens=96, seed=0, logprobs=0)
    res = llm.generate(prompts, params)
    chat = llm.chat([{"role": "user", "content": questions[0]}],
                    SamplingParams(temperature=0.0, max_tokens=96))
    out = {
        "prompts": prompts,
        "prompt_token_ids": [r.prompt_token_ids for r in res],
        "samples": [[{"text": o.text, "token_ids": list(o.token_ids),
                      "cumulative_logprob": o.cumulative_logprob,
                      "finish_reason": o.finish_reason} for o in r.outputs] for r in res],
        "chat_prompt_token_ids": chat[0].prompt_token_ids,
        "chat_text": chat[0].outputs[0].text,
    }
    with open(out_path, "w") as f:
        json.dump(out, f)
