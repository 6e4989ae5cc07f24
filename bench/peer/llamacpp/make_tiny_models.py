#!/usr/bin/env python3
"""Model folders for bench/peer/llamacpp/parity.sh, in plain Python (no numpy or torch):
  python3 make_tiny_models.py FIXTURES_HF OUT_DIR
From the fixtures' llama-tiny and qwen2-tiny weights (extra tensors drawn from a seeded Gaussian): qwen3-tiny (no
biases, q/k norms), mixtral-tiny (4 experts, top 2), qwen3moe-tiny (4 experts, top 2, norm_topk_prob), qwen2moe-tiny
(4 experts, top 2, a gated shared expert), and RoPE variants of llama-tiny (linear, llama3, yarn) and qwen3-tiny (yarn)."""
import json, struct, random, shutil, os, sys
def read(path):
    with open(path,'rb') as f:
        n=struct.unpack('<Q',f.read(8))[0]; h=json.loads(f.read(n)); base=8+n; data=f.read()
    out={}
    for k,v in h.items():
        if k=='__metadata__': continue
        a,b=v['data_offsets']; out[k]=(v['shape'], list(struct.unpack(f'<{(b-a)//4}f', data[a:b])))
    return out
def write(path,t):
    h={}; off=0; blobs=[]
    for k,(shape,vals) in t.items():
        b=struct.pack(f'<{len(vals)}f',*vals); h[k]={'dtype':'F32','shape':shape,'data_offsets':[off,off+len(b)]}; off+=len(b); blobs.append(b)
    hj=json.dumps(h).encode(); hj+=b' '*((8-len(hj)%8)%8)
    with open(path,'wb') as f: f.write(struct.pack('<Q',len(hj))); f.write(hj); [f.write(b) for b in blobs]
def rnd(shape,s=0.1):
    n=1
    for d in shape: n*=d
    return (shape,[random.gauss(0,s) for _ in range(n)])
def folder(src,dst,cfgpatch,tensors):
    if os.path.exists(dst): shutil.rmtree(dst)
    os.makedirs(dst)
    for f in ['tokenizer.json','tokenizer_config.json','chat_template.jinja','generation_config.json']:
        if os.path.exists(os.path.join(src,f)): shutil.copy(os.path.join(src,f),dst)
    c=json.load(open(os.path.join(src,'config.json'))); c.update(cfgpatch)
    json.dump(c,open(os.path.join(dst,'config.json'),'w'),indent=2); write(os.path.join(dst,'model.safetensors'),tensors)
random.seed(5)
F=sys.argv[1].rstrip('/')+'/'
O=sys.argv[2].rstrip('/')+'/'
os.makedirs(O, exist_ok=True)
q2=read(F+'qwen2-tiny/model.safetensors'); ll=read(F+'llama-tiny/model.safetensors')
qc=json.load(open(F+'qwen2-tiny/config.json')); L=qc['num_hidden_layers']; C=qc['hidden_size']; D=qc.get('head_dim') or C//qc['num_attention_heads']
# qwen3: drop biases, add q/k norms
t={k:v for k,v in q2.items() if not k.endswith('.bias')}
for i in range(L):
    t[f'model.layers.{i}.self_attn.q_norm.weight']=([D],[1+random.gauss(0,0.1) for _ in range(D)])
    t[f'model.layers.{i}.self_attn.k_norm.weight']=([D],[1+random.gauss(0,0.1) for _ in range(D)])
folder(F+'qwen2-tiny',O+'qwen3-tiny',{'model_type':'qwen3','architectures':['Qwen3ForCausalLM'],'head_dim':D,'attention_bias':False},t)
q3=dict(t)
def moe(base,prefix_mlp,names,E,Fe,router,extra=None):
    t={k:v for k,v in base.items() if '.mlp.' not in k}
    for i in range(L):
        t[f'model.layers.{i}.{prefix_mlp}.{router}.weight']=rnd([E,C],0.5)
        for e in range(E):
            g,u,d=names
            t[f'model.layers.{i}.{prefix_mlp}.experts.{e}.{g}.weight']=rnd([Fe,C]); t[f'model.layers.{i}.{prefix_mlp}.experts.{e}.{u}.weight']=rnd([Fe,C]); t[f'model.layers.{i}.{prefix_mlp}.experts.{e}.{d}.weight']=rnd([C,Fe])
        if extra: extra(t,i)
    return t
lc=json.load(open(F+'llama-tiny/config.json'))
folder(F+'llama-tiny',O+'mixtral-tiny',{'model_type':'mixtral','architectures':['MixtralForCausalLM'],'num_local_experts':4,'num_experts_per_tok':2,'intermediate_size':64},
       moe(ll,'block_sparse_moe',('w1','w3','w2'),4,64,'gate'))
folder(O+'qwen3-tiny',O+'qwen3moe-tiny',{'model_type':'qwen3_moe','architectures':['Qwen3MoeForCausalLM'],'num_experts':4,'num_experts_per_tok':2,'moe_intermediate_size':32,'norm_topk_prob':True,'decoder_sparse_step':1,'mlp_only_layers':[]},
       moe(q3,'mlp',('gate_proj','up_proj','down_proj'),4,32,'gate'))
def shared(t,i):
    t[f'model.layers.{i}.mlp.shared_expert.gate_proj.weight']=rnd([48,C]); t[f'model.layers.{i}.mlp.shared_expert.up_proj.weight']=rnd([48,C]); t[f'model.layers.{i}.mlp.shared_expert.down_proj.weight']=rnd([C,48])
    t[f'model.layers.{i}.mlp.shared_expert_gate.weight']=rnd([1,C],0.3)
folder(F+'qwen2-tiny',O+'qwen2moe-tiny',{'model_type':'qwen2_moe','architectures':['Qwen2MoeForCausalLM'],'num_experts':4,'num_experts_per_tok':2,'moe_intermediate_size':32,'shared_expert_intermediate_size':48,'norm_topk_prob':False,'decoder_sparse_step':1,'mlp_only_layers':[]},
       moe(q2,'mlp',('gate_proj','up_proj','down_proj'),4,32,'gate',shared))

for src, name, rope in [(F+'llama-tiny', 'llama-tiny-linear', {"rope_type": "linear", "rope_theta": 10000.0, "factor": 4.0}),
                        (F+'llama-tiny', 'llama-tiny-llama3', {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 64}),
                        (F+'llama-tiny', 'llama-tiny-yarn', {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0, "original_max_position_embeddings": 64}),
                        (O+'qwen3-tiny', 'qwen3-tiny-yarn', {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0, "original_max_position_embeddings": 64})]:
    if os.path.exists(O+name): shutil.rmtree(O+name)
    shutil.copytree(src, O+name)
    c = json.load(open(O+name+'/config.json')); c.pop('rope_scaling', None); c['rope_parameters'] = rope
    json.dump(c, open(O+name+'/config.json', 'w'), indent=2)
