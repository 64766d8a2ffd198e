"""Eval (ctx 2048, the eval corpus's first 2 chunks, default f16 tier, calibration applied) of uniform, K/V-split and
planned per-layer OScaR caches. Needs 0008-per-layer-cache-types.patch applied on top of patches/.
    python plan_eval.py CALIBRATED.gguf sensitivity.npy N_LAYER BASE_KLD OUT.json
"""
import os, sys, json, numpy as np
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # bitplan.py beside this file
import llama_cpp
from oscar_gguf.chat import OscarModel
from oscar_gguf.corpus import load_corpus
from oscar_gguf.evaluate import chunk_logits, compare
from bitplan import choose, layer_types
model, ctx, L = sys.argv[1], 2048, int(sys.argv[3])
S = np.load(sys.argv[2]); base = float(sys.argv[4])
text = load_corpus("eval").text
variants = {"oscar2": ("oscar2", "oscar2", None), "K3V2": ("oscar3", "oscar2", None), "oscar3": ("oscar3", "oscar3", None),
            "K4V2": ("oscar4", "oscar2", None), "K4V3": ("oscar4", "oscar3", None)}
for b in (2.75, 3.25):
    p = choose(S, base, b)
    variants[f"plan{b} ({p.bits_per_element:.2f})"] = ("oscar4", "oscar4", layer_types(p.bits_k, p.bits_v))
res = {}
ref_m = OscarModel(model, kv="f16", ctx=ctx, logits_all=True)
toks = ref_m.llm.tokenize(text.encode(), add_bos=False, special=False); bos = ref_m.llm.token_bos()
chunks = [[bos] + toks[c*(ctx-1):(c+1)*(ctx-1)] for c in range(2)]
refs = [chunk_logits(ref_m.llm, ch)[:-1] for ch in chunks]; ref_m.close()
for name, (k, v, lt) in variants.items():
    klds = []
    for ch, ref in zip(chunks, refs):
        m = OscarModel(model, kv_k=k, kv_v=v, ctx=ctx, logits_all=True, oscar_layer_types=lt)
        kld, _, _ = compare(ref, chunk_logits(m.llm, ch)[:-1], np.array(ch[1:])); m.close()
        klds.append(kld[ctx//2:])
    res[name] = float(np.concatenate(klds).mean()); print(name, res[name], flush=True)
json.dump(res, open(sys.argv[5], "w"), indent=1)
