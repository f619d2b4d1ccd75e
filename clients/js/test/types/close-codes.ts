// Compile-time check: every close code the socket description (schema/asyncapi.json)
// lists is in CloseCode, under the same name and number.
import type { CloseCode } from "../../src/index.js";
import type { CLOSE_CODES } from "../../src/generated/frames.js";

type Documented = (typeof CLOSE_CODES)[number];
type Named = { readonly [E in Documented as E["name"]]: E["code"] };
const named: Named = null as unknown as typeof CloseCode;
void named;
