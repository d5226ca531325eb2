"""What the assistant says on its own (not the model), in the four answer languages.
Traditional Chinese texts are converted from the Simplified ones with OpenCC.

>>> say("no_evidence", "vi", kb="clinic").startswith("Tôi không tìm thấy")
True
>>> "知識庫" in say("no_evidence", "zh-Hant", kb="clinic")
True
"""
from __future__ import annotations

from assistant.language import to_traditional

_TEXTS = {
    "no_evidence": {
        "en": "I could not find the answer in the knowledge base \u201c{kb}\u201d. The closest "
              "passages it holds are listed below; they may not answer the question.",
        "zh-Hans": "我在知识库\u201c{kb}\u201d中没有找到答案。下面列出它所含的最接近的段落，它们可能无法回答这个问题。",
        "vi": "Tôi không tìm thấy câu trả lời trong cơ sở tri thức \u201c{kb}\u201d. Dưới đây là "
              "những đoạn gần nhất mà nó có; chúng có thể không trả lời được câu hỏi.",
    },
    "out_of_scope": {
        "en": "I can only answer questions about {scope} from the documents in \u201c{kb}\u201d. "
              "Your question seems to be about something else, so I cannot help with it here.",
        "zh-Hans": "我只能根据\u201c{kb}\u201d中的文档回答有关{scope}的问题。您的问题似乎与此无关，所以我无法在这里回答。",
        "vi": "Tôi chỉ có thể trả lời các câu hỏi về {scope} dựa trên tài liệu trong "
              "\u201c{kb}\u201d. Câu hỏi của bạn có vẻ thuộc chủ đề khác, nên tôi không thể giúp ở đây.",
    },
    "dose_removed": {
        "en": "A dose the model gave without citing a source was left out.",
        "zh-Hans": "模型给出但未引用来源的剂量已被删去。",
        "vi": "Liều dùng mà mô hình đưa ra không có nguồn trích dẫn đã bị lược bỏ.",
    },
}
_TEXTS["disclaimer"] = {
    "en": "Docent answers from your documents and is not a doctor: check medical decisions "
          "with a health professional.",
    "zh-Hans": "Docent 根据您的文档作答，并非医生：医疗决定请向医护人员确认。",
    "vi": "Docent trả lời dựa trên tài liệu của bạn và không phải là bác sĩ: hãy hỏi ý kiến "
          "nhân viên y tế trước khi quyết định về sức khỏe.",
}
_TEXTS["closest"] = {
    "en": "Closest passages", "zh-Hans": "最接近的段落", "vi": "Những đoạn gần nhất"}
_TEXTS["draft"] = {
    "en": "draft: checked against its sources when complete",
    "zh-Hans": "草稿：完成后会与来源核对", "vi": "bản nháp: sẽ được đối chiếu với nguồn khi hoàn tất"}
_SCOPES = {"medical": {"en": "health and medicine", "zh-Hans": "健康和医学", "vi": "sức khỏe và y học"}}


def say(key: str, lang: str, **fields: str) -> str:
    simplified = lang == "zh-Hant"
    base = "zh-Hans" if simplified else lang
    texts = _TEXTS[key]
    if "scope" in fields:
        fields["scope"] = _SCOPES.get(fields["scope"], {}).get(base, fields["scope"])
    text = texts.get(base, texts["en"]).format(**fields)
    return to_traditional(text) if simplified else text
