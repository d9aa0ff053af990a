"""`emoji`: the list of emojis and a lookup by shortcode, as emojivoto's EmojiService (ListAll, FindByShortcode)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

LIST_PATH = "/list"
FIND_PATH = "/find"

# A slice of emojivoto's list, in its order.
EMOJIS = {
    ":joy:": "😂",
    ":sunglasses:": "😎",
    ":doughnut:": "🍩",
    ":stuck_out_tongue_winking_eye:": "😜",
    ":money_mouth_face:": "🤑",
    ":flushed:": "😳",
    ":mask:": "😷",
    ":nerd_face:": "🤓",
    ":ghost:": "👻",
    ":skull_and_crossbones:": "☠️",
    ":heart_eyes_cat:": "😻",
    ":hear_no_evil:": "🙉",
    ":see_no_evil:": "🙈",
    ":speak_no_evil:": "🙊",
    ":rainbow:": "🌈",
    ":pizza:": "🍕",
    ":taco:": "🌮",
    ":burrito:": "🌯",
    ":ramen:": "🍜",
    ":champagne:": "🍾",
    ":tropical_drink:": "🍹",
    ":beer:": "🍺",
    ":rocket:": "🚀",
    ":fire:": "🔥",
    ":tada:": "🎉",
    ":trophy:": "🏆",
    ":bulb:": "💡",
    ":crystal_ball:": "🔮",
    ":100:": "💯",
    ":dog:": "🐶",
}


def routes() -> list[Route]:
    return [Route(LIST_PATH, list_all), Route(FIND_PATH, find_by_shortcode)]


async def list_all(request: Request) -> JSONResponse:
    return JSONResponse([_emoji(shortcode) for shortcode in EMOJIS])


async def find_by_shortcode(request: Request) -> JSONResponse:
    shortcode = request.query_params.get("shortcode", "")
    if shortcode not in EMOJIS:
        return JSONResponse({"error": f"no emoji with shortcode {shortcode!r}"}, status_code=404)
    return JSONResponse(_emoji(shortcode))


def _emoji(shortcode: str) -> dict[str, str]:
    return {"shortcode": shortcode, "unicode": EMOJIS[shortcode]}
