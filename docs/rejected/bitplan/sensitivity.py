"""Each layer's K or V at 2 or 3 bits, every other layer at 4 (default f16 tier, calibration applied), on the first
N tokens of the calibration text: the KLD increase over the all-4-bit cache. Needs 0008-per-layer-cache-types.patch.
    python sensitivity.py CALIBRATED.gguf N OUT.json N_LAYER
"""
import sys, time, json, numpy as np
import llama_cpp
from oscar_gguf.kvtypes import kv_type
from oscar_gguf.calibrate import calibration_text
from oscar_gguf.evaluate import log_softmax
model = sys.argv[1]; n = int(sys.argv[2]); out = sys.argv[3]
T = {b: kv_type(f"oscar{b}").ggml_type for b in (2, 3, 4)}
def logits(types):
    llm = llama_cpp.Llama(model_path=model, n_ctx=n, n_batch=n, n_ubatch=n, flash_attn=True, type_k=T[4], type_v=T[4],
                          logits_all=True, verbose=False, oscar_sinks=1, oscar_window=128, oscar_layer_types=types, n_threads=2)
    llm.eval(toks); a = log_softmax(np.array(llm.scores[:n], dtype=np.float64)); llm.close(); return a
llm = llama_cpp.Llama(model_path=model, n_ctx=n, flash_attn=True, logits_all=True, verbose=False)
toks = [llm.token_bos()] + llm.tokenize(calibration_text(None).text.encode(), add_bos=False)[:n-1]
llm.eval(toks); ref = log_softmax(np.array(llm.scores[:n], dtype=np.float64)); llm.close()
L = llm_layers = int(sys.argv[4])
def kld(a): return float((np.exp(ref[n//2:]) * (ref[n//2:] - a[n//2:])).sum(-1).mean())
base = kld(logits([T[4]] * 2 * L)); print("base", base, flush=True)
res = {"base": base, "d": {}}
t0 = time.time()
for kv in (0, 1):
    for b in (2, 3):
        for l in range(L):
            ty = [T[4]] * 2 * L; ty[kv * L + l] = T[b]
            res["d"][f"{'KV'[kv]}{l}b{b}"] = kld(logits(ty)) - base
        print(kv, b, time.time() - t0, flush=True)
json.dump(res, open(out, "w"))
