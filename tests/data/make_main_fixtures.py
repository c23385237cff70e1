"""How fits_main_v1.nc, price_card_main_v1.json, batched_main.csv and main_v1_expected.json were made.

Run with the code of main at fbc1e08 (before issue 31, when the fits lived in ``energykit.fitting``
and the batch-aware fit was stored with batch size 0), from its checkout:
``python tests/data/make_main_fixtures.py tests/data``. Kept as the record of the old format;
tests/test_model_variables.py checks that the current kit reads these files and gives these numbers.
"""
import json, sys
from energykit import dataset, hardware
from energykit.presets import PRESETS
from energykit.fitting import fit_dataset, price_card
out = sys.argv[1]
COEF = dict(prefill_j_per_flop=2e-12, decode_j_per_flop=3e-12, weight_j_per_byte=4e-10, kv_j_per_byte=2e-10, step_j_per_layer=0.02, request_j=5.0)
df = hardware.simulate(PRESETS["llama3.2-1b"], COEF, (1, 4, 16), (64, 256, 1024), (16, 64, 256), noise_pct=2.0, seed=3)
df.to_csv(f"{out}/batched_main.csv", index=False)
ds = dataset.load(f"{out}/batched_main.csv")
fs = fit_dataset(ds, cv_folds=3)
print("batched:", list(fs.batched), "keys", fs.keys)
fs.save(f"{out}/fits_main_v1.nc", n_draws=20, source={"data": "tests/data/batched_main.csv"})
card = price_card(ds, n_draws=20, source=["tests/data/batched_main.csv"])
open(f"{out}/price_card_main_v1.json", "w").write(json.dumps(card, indent=1))
print(card["models"][0]["kind"], card["models"][0]["batch_sizes"])
import json, sys
from energykit.fitting import load_fits
from energykit import price
out = sys.argv[1]
fs = load_fits(f"{out}/fits_main_v1.nc")
b = fs.batched["simulated"]
s = fs.get("simulated", 4)
card = price.load_card(f"{out}/price_card_main_v1.json")
exp = {"batched_predict_512_128_8": float(b.predict(512, 128, 8)),
       "batched_interval_512_128_8": [float(x[0]) for x in b.predict_interval([512], [128], n=20, batch_size=8)],
       "sweetspot_b4_predict_512_128": float(s.predict(512, 128)),
       "price_512_128_8": list(price.price(card, "simulated", 512, 128, batch=8))}
print(exp)
open(f"{out}/main_v1_expected.json", "w").write(json.dumps(exp, indent=1))
