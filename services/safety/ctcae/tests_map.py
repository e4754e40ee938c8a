"""Which CTCAE terms a lab test grades, by CDISC LBTESTCD or LOINC code.

One test can grade two terms (potassium: hypo- and hyperkalemia); callers grade both and keep the abnormal
one with `worst_grade`. Total calcium (CA) is graded with the corrected-calcium rules, as is usual when no
corrected value is sent: CTCAE states its calcium cut-offs for corrected serum calcium.
"""

from __future__ import annotations

from collections.abc import Mapping

ANEMIA_AND_HGB_UP = ("Anemia", "Hemoglobin increased")
WBC = ("White blood cell decreased", "Leukocytosis")
LYMPH = ("Lymphocyte count decreased", "Lymphocyte count increased")
CALCIUM = ("Hypocalcemia", "Hypercalcemia")
IONIZED_CALCIUM = ("Hypocalcemia (ionized)", "Hypercalcemia (ionized)")
POTASSIUM = ("Hypokalemia", "Hyperkalemia")
SODIUM = ("Hyponatremia", "Hypernatremia")
MAGNESIUM = ("Hypomagnesemia", "Hypermagnesemia")
GLUCOSE = ("Hypoglycemia", "Hyperglycemia")
PH = ("Acidosis", "Alkalosis")
PHOSPHATE = ("Hypophosphatemia", "Hyperphosphatemia")

_BY_TEST: Mapping[str, tuple[str, ...]] = {
    # CDISC SDTM LBTESTCD
    "NEUT": ("Neutrophil count decreased",),
    "ANC": ("Neutrophil count decreased",),
    "PLAT": ("Platelet count decreased",),
    "HGB": ANEMIA_AND_HGB_UP,
    "WBC": WBC,
    "LYM": LYMPH,
    "CD4": ("CD4 lymphocytes decreased",),
    "ALT": ("Alanine aminotransferase increased",),
    "AST": ("Aspartate aminotransferase increased",),
    "ALP": ("Alkaline phosphatase increased",),
    "GGT": ("GGT increased",),
    "BILI": ("Blood bilirubin increased",),
    "CREAT": ("Creatinine increased",),
    "CK": ("CPK increased",),
    "LDH": ("Blood lactate dehydrogenase increased",),
    "LIPASE": ("Lipase increased",),
    "AMYLASE": ("Serum amylase increased",),
    "APTT": ("Activated partial thromboplastin time prolonged",),
    "INR": ("INR increased",),
    "FIBRINO": ("Fibrinogen decreased",),
    "HAPTO": ("Haptoglobin decreased",),
    "CHOL": ("Cholesterol high",),
    "TRIG": ("Hypertriglyceridemia",),
    "URATE": ("Hyperuricemia",),
    "ALB": ("Hypoalbuminemia",),
    "CA": CALCIUM,
    "CACR": CALCIUM,
    "CAION": IONIZED_CALCIUM,
    "ICA": IONIZED_CALCIUM,
    "K": POTASSIUM,
    "SODIUM": SODIUM,
    "NA": SODIUM,
    "MG": MAGNESIUM,
    "GLUC": GLUCOSE,
    "PH": PH,
    "PHOS": PHOSPHATE,
    # LOINC
    "751-8": ("Neutrophil count decreased",),  # Neutrophils [#/volume] in Blood by Automated count
    "26499-4": ("Neutrophil count decreased",),  # Neutrophils [#/volume] in Blood
    "770-8": ("Neutrophil count decreased",),  # Neutrophils/100 leukocytes: a percentage, refused
    "777-3": ("Platelet count decreased",),  # Platelets [#/volume] in Blood by Automated count
    "26515-7": ("Platelet count decreased",),  # Platelets [#/volume] in Blood
    "718-7": ANEMIA_AND_HGB_UP,  # Hemoglobin [Mass/volume] in Blood
    "6690-2": WBC,  # Leukocytes [#/volume] in Blood by Automated count
    "26464-8": WBC,  # Leukocytes [#/volume] in Blood
    "731-0": LYMPH,  # Lymphocytes [#/volume] in Blood by Automated count
    "26474-7": LYMPH,  # Lymphocytes [#/volume] in Blood
    "736-9": LYMPH,  # Lymphocytes/100 leukocytes: a percentage, refused
    "24467-3": ("CD4 lymphocytes decreased",),  # CD3+CD4+ cells [#/volume] in Blood
    "1742-6": ("Alanine aminotransferase increased",),
    "1920-8": ("Aspartate aminotransferase increased",),
    "6768-6": ("Alkaline phosphatase increased",),
    "2324-2": ("GGT increased",),
    "1975-2": ("Blood bilirubin increased",),  # Bilirubin.total [Mass/volume]
    "14631-6": ("Blood bilirubin increased",),  # Bilirubin.total [Moles/volume]
    "2160-0": ("Creatinine increased",),  # Creatinine [Mass/volume]
    "14682-9": ("Creatinine increased",),  # Creatinine [Moles/volume]
    "2157-6": ("CPK increased",),
    "2532-0": ("Blood lactate dehydrogenase increased",),
    "14804-9": ("Blood lactate dehydrogenase increased",),
    "3040-3": ("Lipase increased",),
    "1798-8": ("Serum amylase increased",),
    "3173-2": ("Activated partial thromboplastin time prolonged",),
    "14979-9": ("Activated partial thromboplastin time prolonged",),
    "6301-6": ("INR increased",),
    "34714-6": ("INR increased",),
    "3255-7": ("Fibrinogen decreased",),
    "4542-7": ("Haptoglobin decreased",),
    "2093-3": ("Cholesterol high",),  # Cholesterol [Mass/volume]
    "14647-2": ("Cholesterol high",),  # Cholesterol [Moles/volume]
    "2571-8": ("Hypertriglyceridemia",),  # Triglyceride [Mass/volume]
    "14927-8": ("Hypertriglyceridemia",),  # Triglyceride [Moles/volume]
    "3084-1": ("Hyperuricemia",),  # Urate [Mass/volume]
    "14933-6": ("Hyperuricemia",),  # Urate [Moles/volume]
    "1751-7": ("Hypoalbuminemia",),
    "17861-6": CALCIUM,  # Calcium [Mass/volume]
    "2000-8": CALCIUM,  # Calcium [Moles/volume]
    "29265-6": CALCIUM,  # Calcium corrected for albumin [Mass/volume]
    "1994-3": IONIZED_CALCIUM,  # Calcium.ionized [Moles/volume] in Blood
    "1995-0": IONIZED_CALCIUM,  # Calcium.ionized [Moles/volume] in Serum or Plasma
    "2823-3": POTASSIUM,  # Potassium [Moles/volume] in Serum or Plasma
    "6298-4": POTASSIUM,  # Potassium [Moles/volume] in Blood
    "2951-2": SODIUM,  # Sodium [Moles/volume] in Serum or Plasma
    "2947-0": SODIUM,  # Sodium [Moles/volume] in Blood
    "19123-9": MAGNESIUM,  # Magnesium [Mass/volume]
    "2601-3": MAGNESIUM,  # Magnesium [Moles/volume]
    "2345-7": GLUCOSE,  # Glucose [Mass/volume] in Serum or Plasma
    "2339-0": GLUCOSE,  # Glucose [Mass/volume] in Blood
    "14749-6": GLUCOSE,  # Glucose [Moles/volume] in Serum or Plasma
    "2744-1": PH,  # pH of Arterial blood
    "2746-6": PH,  # pH of Venous blood
    "11558-4": PH,  # pH of Blood
    "2777-1": PHOSPHATE,  # Phosphate [Mass/volume]
}


def terms_for_test(test: str) -> tuple[str, ...]:
    """The lab terms a test code grades (empty for a test CTCAE does not grade). Case-insensitive."""
    return _BY_TEST.get(test.strip().upper(), ())


def known_tests() -> frozenset[str]:
    return frozenset(_BY_TEST)
