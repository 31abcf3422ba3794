package campaign_pipeline.udf;

import com.google.i18n.phonenumbers.NumberParseException;
import com.google.i18n.phonenumbers.PhoneNumberUtil;
import com.google.i18n.phonenumbers.Phonenumber.PhoneNumber;
import java.util.Locale;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.RowFactory;
import org.apache.spark.sql.api.java.UDF2;

/**
 * A typed phone number and its default region to (e164, country, type, valid, intl_prefix), with
 * Google's libphonenumber in the executor's JVM.
 *
 * <p>This is the same decision as {@code campaign_pipeline.screening.phones.parse_phone} (the
 * Python port, kept as the reference the tests compare against), written for the JVM because the
 * Python port parses about 12k numbers a second per core. Python's notions of whitespace
 * ({@code str.strip}, {@code \s}) and digits ({@code \d}) are Unicode-wide, so they are spelled
 * out here rather than taken from Java's ASCII defaults.
 */
public final class PhoneDetails implements UDF2<String, String, Row> {
  private static final long serialVersionUID = 1L;

  /** Every character for which Python's str.isspace() is true. */
  static final String PY_SPACE =
      "\\t\\n\\x0B\\f\\r\\x1C\\x1D\\x1E\\x1F \\x85\\xA0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000";

  private static final Pattern BLANK = Pattern.compile("[" + PY_SPACE + "]*");
  private static final Pattern DIALLING_PREFIX = Pattern.compile("^[" + PY_SPACE + "]*(?:\\+|00|011)");
  private static final Pattern NOT_DIGITS = Pattern.compile("[^\\p{Nd}]");
  private static final Row BLANK_ROW = RowFactory.create(null, null, null, null, null);
  private static final Row INVALID_ROW = RowFactory.create(null, null, null, false, false);

  private transient PhoneNumberUtil util;

  private PhoneNumberUtil util() {
    if (util == null) {
      util = PhoneNumberUtil.getInstance();
    }
    return util;
  }

  /**
   * The number's line type when {@code raw} parses to a valid number, else null. Valid means
   * exactly what {@code isValidNumber} means: the region found for the number has a type for it
   * other than UNKNOWN (libphonenumber's isValidNumber is that test). Asking for the type once
   * instead of isValidNumber then getNumberType saves a pass over the region's patterns.
   */
  private PhoneNumberUtil.PhoneNumberType validType(PhoneNumber number) {
    PhoneNumberUtil.PhoneNumberType type = util().getNumberType(number);
    return type == PhoneNumberUtil.PhoneNumberType.UNKNOWN ? null : type;
  }

  private PhoneNumber parse(String raw, String region) {
    try {
      return util().parse(raw, region);
    } catch (NumberParseException e) {
      return null;
    }
  }

  @Override
  public Row call(String raw, String region) {
    if (raw == null || BLANK.matcher(raw).matches()) {
      return BLANK_ROW;
    }
    // Python's `(region or "US")`: an empty region counts as none.
    String defaultRegion = region == null || region.isEmpty() ? "US" : region.toUpperCase(Locale.ROOT);
    PhoneNumber number = parse(raw, defaultRegion);
    PhoneNumberUtil.PhoneNumberType type = number == null ? null : validType(number);
    boolean fallback = false;
    if (type == null) {
      Matcher prefix = DIALLING_PREFIX.matcher(raw);
      if (prefix.find()) {
        String digits = NOT_DIGITS.matcher(raw.substring(prefix.end())).replaceAll("");
        if (!digits.isEmpty()) {
          number = parse("+" + digits, null);
          type = number == null ? null : validType(number);
          fallback = true;
        }
      }
    }
    if (type == null) {
      return INVALID_ROW;
    }
    String e164 = util().format(number, PhoneNumberUtil.PhoneNumberFormat.E164);
    String kind = type.name().toLowerCase(Locale.ROOT);
    return RowFactory.create(e164, util().getRegionCodeForNumber(number), kind, true, fallback);
  }
}
