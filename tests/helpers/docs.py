"""A tiny clinic knowledge base with known facts on known pages."""
from __future__ import annotations

from pathlib import Path

import docx

from tests.helpers.pdfgen import write_pdf

HANDBOOK_PAGES = [
    [
        "Riverside Clinic Handbook",
        "Chapter 1. Opening hours and contact.",
        "The clinic is open Monday to Friday from 8 am to 6 pm.",
        "Patients can book appointments at the front desk or by telephone.",
        "Bring your insurance card and a list of your current medicines.",
    ],
    [
        "Chapter 2. Antibiotic dosing.",
        "For adults, the usual dose of amoxicillin is 500 mg every 8 hours.",
        "The course of amoxicillin lasts 7 days unless the doctor says otherwise.",
        "Children receive a lower dose that is calculated from their body weight.",
        "Patients allergic to penicillin must not take amoxicillin.",
    ],
    [
        "Chapter 3. Vaccinations.",
        "Adults should receive the influenza vaccine every autumn.",
        "A tetanus booster is recommended every 10 years.",
        "Vaccination records are kept in the patient file.",
    ],
]


def make_clinic_docs(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    pdf = write_pdf(folder / "handbook.pdf", HANDBOOK_PAGES)

    d = docx.Document()
    d.add_heading("Pharmacy policy", level=1)
    d.add_paragraph("The clinic pharmacy closes at 9 pm on Saturdays and is closed on Sundays.")
    table = d.add_table(rows=3, cols=2)
    for row, (a, b) in zip(table.rows, [("Role", "Night on call"), ("Pharmacist", "Tuesday"),
                                         ("Nurse", "Thursday")]):
        row.cells[0].text, row.cells[1].text = a, b
    d.add_paragraph("Expired medicines are returned to the supplier every month.")
    docx_path = folder / "pharmacy.docx"
    d.save(docx_path)

    txt = folder / "visitors.txt"
    txt.write_text(
        "Visitor rules\n\nVisitors must register at the front desk and wear a visitor badge.\n"
        "Visiting hours on the ward are from 2 pm to 7 pm.\n", encoding="utf-16")
    return {"pdf": pdf, "docx": docx_path, "txt": txt}
